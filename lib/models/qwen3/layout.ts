// The tensors (names and shapes) of a Qwen3 checkpoint a config describes. `prefix` is '' for a
// saved Qwen3Model and 'model.' for a Qwen3ForCausalLM checkpoint (the layout of the real Z-Image and
// FLUX.2-klein text encoders); tied word embeddings mean no lm_head. Used to write model folders with
// random weights (demo models, real-config tests); the encoder checks checkpoints against the same names.
import type { Qwen3Config } from '../../io/configs.js';

export type TensorShapes = Array<[name: string, shape: number[]]>;

export function qwen3TensorShapes(c: Qwen3Config, prefix = ''): TensorShapes {
  const d = c.hidden_size;
  const hd = c.head_dim;
  const shapes: TensorShapes = [[`${prefix}embed_tokens.weight`, [c.vocab_size, d]]];
  for (let i = 0; i < c.num_hidden_layers; ++i) {
    const l = `${prefix}layers.${i}`;
    shapes.push(
      [`${l}.input_layernorm.weight`, [d]],
      [`${l}.self_attn.q_proj.weight`, [c.num_attention_heads * hd, d]],
      [`${l}.self_attn.k_proj.weight`, [c.num_key_value_heads * hd, d]],
      [`${l}.self_attn.v_proj.weight`, [c.num_key_value_heads * hd, d]],
      [`${l}.self_attn.o_proj.weight`, [d, c.num_attention_heads * hd]],
    );
    if (c.attention_bias)
      shapes.push(
        [`${l}.self_attn.q_proj.bias`, [c.num_attention_heads * hd]],
        [`${l}.self_attn.k_proj.bias`, [c.num_key_value_heads * hd]],
        [`${l}.self_attn.v_proj.bias`, [c.num_key_value_heads * hd]],
        [`${l}.self_attn.o_proj.bias`, [d]],
      );
    shapes.push(
      [`${l}.self_attn.q_norm.weight`, [hd]],
      [`${l}.self_attn.k_norm.weight`, [hd]],
      [`${l}.post_attention_layernorm.weight`, [d]],
      [`${l}.mlp.gate_proj.weight`, [c.intermediate_size, d]],
      [`${l}.mlp.up_proj.weight`, [c.intermediate_size, d]],
      [`${l}.mlp.down_proj.weight`, [d, c.intermediate_size]],
    );
  }
  shapes.push([`${prefix}norm.weight`, [d]]);
  if (!c.tie_word_embeddings && prefix === 'model.') shapes.push(['lm_head.weight', [c.vocab_size, d]]);
  return shapes;
}
