// Tokenizers against the golden `tokenize` checks (exact ids and masks), encode options, chat
// templates, Python-exact prompt cleaning, and clear errors for missing or unsupported files.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { SafetensorsFile } from '../../lib/io/safetensors.js';
import { cleanPromptWan, pyStrip, unescapeHtml } from '../../lib/io/prompt-clean.js';
import { encodingsToTensors, qwenChatTexts, tokenizeQwenChatPrompts, tokenizeWanPrompts } from '../../lib/io/prompt-tokens.js';
import { bundledQwen3TokenizerDir, loadTokenizer, TokenizerError } from '../../lib/io/tokenizer.js';
import { PY_PROMPT_CLEAN, PY_UNESCAPE } from './python-html.data.js';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const tmp = mkdtempSync(join(tmpdir(), 'nd-tokenizer-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

interface TokenizeParams {
  prompts: string[];
  max_length: number;
  cleaned_prompts?: string[];
  templated_prompts?: string[];
}

/** The golden tokenize check: params and the reference ids / mask rows. */
function golden(c: string): { params: TokenizeParams; ids: number[][]; mask: number[][] } {
  const spec = JSON.parse(readFileSync(join(GOLDEN, c, 'case.json'), 'utf8')) as { checks: Array<{ kind: string; params: TokenizeParams }> };
  const params = spec.checks.find((x) => x.kind === 'tokenize')!.params;
  const io = SafetensorsFile.open(join(GOLDEN, c, 'io.safetensors'));
  const rows = (key: string) => {
    const tt = io.tensor(key);
    const flat = tt.toArray();
    const [b, l] = tt.shape as [number, number];
    tt.dispose();
    return Array.from({ length: b }, (_, i) => flat.slice(i * l, (i + 1) * l));
  };
  const out = { params, ids: rows('tokenize/input_ids'), mask: rows('tokenize/attention_mask') };
  io.dispose();
  return out;
}

async function rejects(tt: Tap, p: Promise<unknown>, pattern: RegExp): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  tt.ok(caught instanceof TokenizerError, 'a TokenizerError');
  tt.match((caught as Error)?.message, pattern);
}

t.test('Wan (T5 Unigram): cleaned prompts and ids exactly as the reference', async (tt) => {
  const g = golden('wan21-t2v');
  tt.same(g.params.prompts.map(cleanPromptWan), g.params.cleaned_prompts);
  const tok = await loadTokenizer(join(GOLDEN, 'wan21-t2v', 'model', 'tokenizer'));
  tt.equal(tok.padTokenId, 0);
  tt.equal(tok.eosTokenId, 1);
  const enc = tokenizeWanPrompts(tok, g.params.prompts, g.params.max_length);
  tt.same(enc.map((e) => e.ids), g.ids, 'input_ids');
  tt.same(enc.map((e) => e.mask), g.mask, 'attention_mask');
  const long = enc[3]!;
  tt.equal(long.ids.length, 512);
  tt.equal(long.ids[511], 1, "a truncated prompt still ends with '</s>'");
  tt.equal(enc[2]!.mask.reduce((a, b) => a + b, 0), 1, "the empty prompt is just '</s>'");

  const { inputIds, attentionMask } = encodingsToTensors(enc);
  tt.same(inputIds.shape, [5, 512]);
  tt.equal(inputIds.dtype, 'int64');
  tt.same(attentionMask.toArray(), g.mask.flat());
  inputIds.dispose();
  attentionMask.dispose();
});

t.test('Z-Image (Qwen3, enable_thinking=True) and FLUX.2-klein (enable_thinking=False): templates and ids exact', async (tt) => {
  for (const [c, enableThinking] of [['zimage-turbo', true], ['flux2-klein', false]] as const) {
    const g = golden(c);
    const tok = await loadTokenizer(join(GOLDEN, c, 'model', 'tokenizer'));
    tt.same(qwenChatTexts(tok, g.params.prompts, enableThinking), g.params.templated_prompts, `${c} templated prompts`);
    const enc = tokenizeQwenChatPrompts(tok, g.params.prompts, { maxLength: g.params.max_length, enableThinking });
    tt.same(enc.map((e) => e.ids), g.ids, `${c} input_ids`);
    tt.same(enc.map((e) => e.mask), g.mask, `${c} attention_mask`);
    tt.equal(tok.padTokenId, 151643, '<|endoftext|> pads');
  }
});

t.test('the bundled Qwen3 tokenizer gives the same ids', async (tt) => {
  const g = golden('zimage-turbo');
  const tok = await loadTokenizer(bundledQwen3TokenizerDir());
  const enc = tokenizeQwenChatPrompts(tok, g.params.prompts, { maxLength: 512, enableThinking: true });
  tt.same(enc.map((e) => e.ids), g.ids);
});

t.test('encode options: padding, truncation, special tokens, padding side', async (tt) => {
  const wan = await loadTokenizer(join(GOLDEN, 'wan21-t2v', 'model', 'tokenizer'));
  const plain = wan.encode('a red fox');
  tt.equal(plain.ids.at(-1), 1, "special tokens by default ('</s>')");
  tt.same(plain.mask, plain.ids.map(() => 1));
  const bare = wan.encode('a red fox', { addSpecialTokens: false });
  tt.same(bare.ids, plain.ids.slice(0, -1));
  tt.same(wan.encode('a red fox', { maxLength: 3, truncation: true }).ids, [...bare.ids.slice(0, 2), 1]);
  tt.same(wan.encode('a red fox', { maxLength: 3, truncation: true, addSpecialTokens: false }).ids, bare.ids.slice(0, 3));
  tt.same(wan.encode('a red fox', { maxLength: 3 }).ids, plain.ids, 'no truncation unless asked');
  const padded = wan.encode('a red fox', { maxLength: 12, padding: 'max_length' });
  tt.same(padded.ids, [...plain.ids, ...Array(12 - plain.ids.length).fill(0)]);
  tt.same(padded.mask, [...plain.ids.map(() => 1), ...Array(12 - plain.ids.length).fill(0)]);
  const batch = wan.encodeBatch(['a', 'a red fox in snow'], { padding: 'longest' });
  tt.equal(batch[0]!.ids.length, batch[1]!.ids.length);
  tt.equal(batch[0]!.mask.filter((m) => m === 1).length, 2);
  tt.equal(wan.decode(bare.ids), 'a red fox');
  tt.same(wan.decode([]), '');
  tt.throws(() => wan.encode('x', { padding: 'max_length' }), /padding 'max_length' and truncation need maxLength/);
  tt.throws(() => wan.encode('x', { maxLength: 0, padding: 'max_length' }), /maxLength must be an integer >= 1/);
  tt.throws(() => wan.encode('x', { maxLength: 1.5 }), /maxLength must be an integer >= 1/);
  tt.throws(() => encodingsToTensors([wan.encode('a'), wan.encode('a red fox')]), /different lengths/);

  const left = join(tmp, 'left');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'tokenizer'), left, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(left, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(left, 'tokenizer_config.json'), JSON.stringify({ ...cfg, padding_side: 'left' }));
  const l = (await loadTokenizer(left)).encode('a red fox', { maxLength: 12, padding: 'max_length' });
  tt.same(l.ids, [...Array(12 - plain.ids.length).fill(0), ...plain.ids], 'left padding');
  tt.same(l.mask, [...Array(12 - plain.ids.length).fill(0), ...plain.ids.map(() => 1)]);

  const noPad = join(tmp, 'no-pad');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'tokenizer'), noPad, { recursive: true });
  writeFileSync(join(noPad, 'tokenizer_config.json'), JSON.stringify({ ...cfg, pad_token: null }));
  writeFileSync(join(noPad, 'special_tokens_map.json'), JSON.stringify({ eos_token: '</s>' }));
  const np = await loadTokenizer(noPad);
  tt.equal(np.padTokenId, undefined);
  tt.throws(() => np.encode('x', { maxLength: 4, padding: 'max_length' }), /padding needs a pad token/);
});

t.test('chat templates: tokenizer_config.json, chat_template.jinja first, missing', async (tt) => {
  const dir = join(tmp, 'qwen');
  cpSync(join(GOLDEN, 'flux2-klein', 'model', 'tokenizer'), dir, { recursive: true, dereference: true });
  writeFileSync(join(dir, 'chat_template.jinja'), '{% for m in messages %}[{{ m.role }}|{{ m.content }}]{% endfor %}{% if add_generation_prompt %}>{{ eos_token }}{% endif %}');
  const tok = await loadTokenizer(dir);
  tt.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { addGenerationPrompt: true }), '[user|hi]><|im_end|>');
  tt.equal(tok.applyChatTemplate([{ role: 'user', content: 'hi' }], { extra: { add_generation_prompt: false } }), '[user|hi]');

  const wan = await loadTokenizer(join(GOLDEN, 'wan21-t2v', 'model', 'tokenizer'));
  tt.equal(wan.chatTemplate, undefined);
  tt.throws(() => wan.applyChatTemplate([{ role: 'user', content: 'x' }]), /no chat template/);
});

t.test('missing or unsupported tokenizer files give clear errors', async (tt) => {
  const empty = join(tmp, 'empty');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'scheduler'), empty, { recursive: true });
  await rejects(tt, loadTokenizer(empty), /no tokenizer.json in .*empty$/);
  writeFileSync(join(empty, 'spiece.model'), 'x');
  await rejects(tt, loadTokenizer(empty), /no tokenizer.json in .*found spiece.model: only the fast-tokenizer format tokenizer.json is supported/);

  const wordLevel = join(tmp, 'word-level');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'tokenizer'), wordLevel, { recursive: true });
  const tj = JSON.parse(readFileSync(join(wordLevel, 'tokenizer.json'), 'utf8')) as { model: Record<string, unknown> };
  writeFileSync(join(wordLevel, 'tokenizer.json'), JSON.stringify({ ...tj, model: { ...tj.model, type: 'WordLevel' } }));
  await rejects(tt, loadTokenizer(wordLevel), /tokenizer model type "WordLevel" is not supported \(supported: BPE, Unigram, WordPiece\)/);
  writeFileSync(join(wordLevel, 'tokenizer.json'), '{"model": ');
  await rejects(tt, loadTokenizer(wordLevel), /tokenizer.json is not valid JSON/);
  writeFileSync(join(wordLevel, 'tokenizer.json'), '[]');
  await rejects(tt, loadTokenizer(wordLevel), /must hold a JSON object/);
});

t.test('prompt cleaning matches Python html.unescape and str.strip / \\s', (tt) => {
  // test names in ASCII (U+2028 / U+0085 would break TAP lines)
  const ascii = (s: string) => JSON.stringify(s).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  for (const [input, expected] of PY_UNESCAPE) tt.equal(unescapeHtml(input), expected, ascii(input));
  for (const [input, expected] of PY_PROMPT_CLEAN) tt.equal(cleanPromptWan(input), expected, ascii(input));
  tt.equal(pyStrip('\x1c\u3000 x \ufeff'), 'x \ufeff', 'U+FEFF is not whitespace in Python, U+001C is');
  tt.end();
});
