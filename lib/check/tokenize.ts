// `tokenize` checks: the prompts of case.json params through this project's prompt encoding.
import { join } from 'node:path';
import { encodingsToTensors, tokenizeQwenChatPrompts, tokenizeWanPrompts } from '../io/prompt-tokens.js';
import { loadTokenizer } from '../io/tokenizer.js';
import type { Encoding } from '../io/tokenizer.js';
import { type CheckContext, registerCheck } from './registry.js';

function prompts(ctx: CheckContext): string[] {
  const p = ctx.check.params.prompts;
  if (!Array.isArray(p) || !p.every((x) => typeof x === 'string')) throw new Error(`check '${ctx.check.name}': params.prompts must be a list of strings`);
  return p;
}

function maxLength(ctx: CheckContext): number {
  const m = ctx.check.params.max_length;
  if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 1) throw new Error(`check '${ctx.check.name}': params.max_length must be a positive integer`);
  return m;
}

function outputs(encodings: Encoding[]) {
  const { inputIds, attentionMask } = encodingsToTensors(encodings);
  return { input_ids: inputIds, attention_mask: attentionMask };
}

registerCheck('WanPipeline', 'tokenize', async (ctx) => {
  const tok = await loadTokenizer(join(ctx.modelDir, 'tokenizer'));
  return outputs(tokenizeWanPrompts(tok, prompts(ctx), maxLength(ctx)));
});

registerCheck('ZImagePipeline', 'tokenize', async (ctx) => {
  const tok = await loadTokenizer(join(ctx.modelDir, 'tokenizer'));
  return outputs(tokenizeQwenChatPrompts(tok, prompts(ctx), { maxLength: maxLength(ctx), enableThinking: true }));
});

registerCheck('Flux2KleinPipeline', 'tokenize', async (ctx) => {
  const tok = await loadTokenizer(join(ctx.modelDir, 'tokenizer'));
  return outputs(tokenizeQwenChatPrompts(tok, prompts(ctx), { maxLength: maxLength(ctx), enableThinking: false }));
});
