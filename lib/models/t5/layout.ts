// The tensors (transformers names and shapes) of a UMT5EncoderModel checkpoint its config describes;
// used to write model folders with random weights (the demo model, real-config tests).
import type { T5EncoderConfig } from '../../io/configs.js';
import type { TensorShapes } from '../wan/layout.js';

export function umt5EncoderTensorShapes(c: T5EncoderConfig): TensorShapes {
  const inner = c.num_heads * c.d_kv;
  const shapes: TensorShapes = [['shared.weight', [c.vocab_size, c.d_model]]];
  for (let i = 0; i < c.num_layers; ++i) {
    const l = `encoder.block.${i}.layer`;
    shapes.push(
      [`${l}.0.SelfAttention.q.weight`, [inner, c.d_model]],
      [`${l}.0.SelfAttention.k.weight`, [inner, c.d_model]],
      [`${l}.0.SelfAttention.v.weight`, [inner, c.d_model]],
      [`${l}.0.SelfAttention.o.weight`, [c.d_model, inner]],
      [`${l}.0.SelfAttention.relative_attention_bias.weight`, [c.relative_attention_num_buckets, c.num_heads]],
      [`${l}.0.layer_norm.weight`, [c.d_model]],
    );
    const ff = `${l}.1.DenseReluDense`;
    if (c.is_gated_act) shapes.push([`${ff}.wi_0.weight`, [c.d_ff, c.d_model]], [`${ff}.wi_1.weight`, [c.d_ff, c.d_model]]);
    else shapes.push([`${ff}.wi.weight`, [c.d_ff, c.d_model]]);
    shapes.push([`${ff}.wo.weight`, [c.d_model, c.d_ff]], [`${l}.1.layer_norm.weight`, [c.d_model]]);
  }
  shapes.push(['encoder.final_layer_norm.weight', [c.d_model]]);
  return shapes;
}
