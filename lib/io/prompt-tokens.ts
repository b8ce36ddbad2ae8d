// Prompt -> token ids exactly as the reference pipelines encode prompts, shared by the pipelines'
// text encoding and the `tokenize` parity checks.
import { type Device, type Tensor, tensor } from '../engine/tensor.js';
import { cleanPromptWan } from './prompt-clean.js';
import type { Encoding, TextTokenizer } from './tokenizer.js';

/**
 * WanPipeline: prompt_clean, then tokenizer(padding='max_length', max_length, truncation=True,
 * add_special_tokens=True) ('</s>' appended; a truncated prompt keeps max_length-1 tokens).
 */
export function tokenizeWanPrompts(tok: TextTokenizer, prompts: string[], maxLength: number): Encoding[] {
  return tok.encodeBatch(
    prompts.map((p) => cleanPromptWan(p)),
    { maxLength, padding: 'max_length', truncation: true, addSpecialTokens: true },
  );
}

export interface QwenChatPromptOptions {
  maxLength: number;
  /** ZImagePipeline passes true (no think block), Flux2KleinPipeline false (empty think block appended) */
  enableThinking: boolean;
}

/** The user-turn chat template of each prompt with the generation prompt. */
export function qwenChatTexts(tok: TextTokenizer, prompts: string[], enableThinking: boolean): string[] {
  return prompts.map((p) => tok.applyChatTemplate([{ role: 'user', content: p }], { addGenerationPrompt: true, enableThinking }));
}

/**
 * ZImagePipeline / Flux2KleinPipeline: chat template per prompt, then tokenizer(padding='max_length',
 * max_length, truncation=True) (the Qwen tokenizer adds no special tokens; padding is <|endoftext|>).
 */
export function tokenizeQwenChatPrompts(tok: TextTokenizer, prompts: string[], opts: QwenChatPromptOptions): Encoding[] {
  return tok.encodeBatch(qwenChatTexts(tok, prompts, opts.enableThinking), {
    maxLength: opts.maxLength,
    padding: 'max_length',
    truncation: true,
  });
}

/** Encodings of equal length as int64 tensors [B, L] (input_ids, attention_mask). */
export function encodingsToTensors(encodings: Encoding[], device: Device = 'cpu'): { inputIds: Tensor; attentionMask: Tensor } {
  if (encodings.length === 0) throw new RangeError('no encodings');
  const len = encodings[0]!.ids.length;
  if (encodings.some((e) => e.ids.length !== len))
    throw new RangeError(`encodings have different lengths (${encodings.map((e) => e.ids.length).join(', ')}); pad them first`);
  const shape = [encodings.length, len];
  const inputIds = tensor(BigInt64Array.from(encodings.flatMap((e) => e.ids), (v) => BigInt(v)), shape, { device });
  const attentionMask = tensor(BigInt64Array.from(encodings.flatMap((e) => e.mask), (v) => BigInt(v)), shape, { device });
  return { inputIds, attentionMask };
}
