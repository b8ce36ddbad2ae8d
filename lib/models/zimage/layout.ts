// The tensors (diffusers names and shapes) of the ZImageTransformer2DModel a config describes. Used
// to write model folders with random weights (the demo model, real-config tests); the model checks
// checkpoints against the same names.
import type { ZImageTransformer2DConfig } from '../../io/configs.js';

export type TensorShapes = Array<[name: string, shape: number[]]>;

/** Width of the timestep embedding that drives the adaLN modulation (ADALN_EMBED_DIM, capped at dim). */
export function zimageAdalnDim(c: ZImageTransformer2DConfig): number {
  return Math.min(c.dim, 256);
}

/** Hidden width of the SwiGLU feed-forward: int(dim / 3 * 8). */
export function zimageFfnDim(c: ZImageTransformer2DConfig): number {
  return Math.trunc((c.dim / 3) * 8);
}

/** Hidden width of the timestep MLP (TimestepEmbedder mid_size). */
export const ZIMAGE_TIMESTEP_MLP_DIM = 1024;
/** Sinusoidal frequencies fed to the timestep MLP. */
export const ZIMAGE_TIMESTEP_FREQ_DIM = 256;

export function zimageTransformerTensorShapes(c: ZImageTransformer2DConfig): TensorShapes {
  const dim = c.dim;
  const headDim = dim / c.n_heads;
  const adaln = zimageAdalnDim(c);
  const ffn = zimageFfnDim(c);
  const shapes: TensorShapes = [
    ['x_pad_token', [1, dim]],
    ['cap_pad_token', [1, dim]],
  ];
  c.all_patch_size.forEach((p, i) => {
    const f = c.all_f_patch_size[i] as number;
    const key = `${p}-${f}`;
    const patchDim = f * p * p * c.in_channels;
    shapes.push(
      [`all_x_embedder.${key}.weight`, [dim, patchDim]],
      [`all_x_embedder.${key}.bias`, [dim]],
      [`all_final_layer.${key}.linear.weight`, [patchDim, dim]],
      [`all_final_layer.${key}.linear.bias`, [patchDim]],
      [`all_final_layer.${key}.adaLN_modulation.1.weight`, [dim, adaln]],
      [`all_final_layer.${key}.adaLN_modulation.1.bias`, [dim]],
    );
  });
  const block = (prefix: string, modulation: boolean) => {
    if (c.qk_norm) shapes.push([`${prefix}.attention.norm_q.weight`, [headDim]], [`${prefix}.attention.norm_k.weight`, [headDim]]);
    shapes.push(
      [`${prefix}.attention.to_q.weight`, [dim, dim]],
      [`${prefix}.attention.to_k.weight`, [dim, dim]],
      [`${prefix}.attention.to_v.weight`, [dim, dim]],
      [`${prefix}.attention.to_out.0.weight`, [dim, dim]],
      [`${prefix}.feed_forward.w1.weight`, [ffn, dim]],
      [`${prefix}.feed_forward.w2.weight`, [dim, ffn]],
      [`${prefix}.feed_forward.w3.weight`, [ffn, dim]],
      [`${prefix}.attention_norm1.weight`, [dim]],
      [`${prefix}.ffn_norm1.weight`, [dim]],
      [`${prefix}.attention_norm2.weight`, [dim]],
      [`${prefix}.ffn_norm2.weight`, [dim]],
    );
    if (modulation) shapes.push([`${prefix}.adaLN_modulation.0.weight`, [4 * dim, adaln]], [`${prefix}.adaLN_modulation.0.bias`, [4 * dim]]);
  };
  for (let i = 0; i < c.n_refiner_layers; ++i) block(`noise_refiner.${i}`, true);
  for (let i = 0; i < c.n_refiner_layers; ++i) block(`context_refiner.${i}`, false);
  shapes.push(
    ['t_embedder.mlp.0.weight', [ZIMAGE_TIMESTEP_MLP_DIM, ZIMAGE_TIMESTEP_FREQ_DIM]],
    ['t_embedder.mlp.0.bias', [ZIMAGE_TIMESTEP_MLP_DIM]],
    ['t_embedder.mlp.2.weight', [adaln, ZIMAGE_TIMESTEP_MLP_DIM]],
    ['t_embedder.mlp.2.bias', [adaln]],
    ['cap_embedder.0.weight', [c.cap_feat_dim]],
    ['cap_embedder.1.weight', [dim, c.cap_feat_dim]],
    ['cap_embedder.1.bias', [dim]],
  );
  for (let i = 0; i < c.n_layers; ++i) block(`layers.${i}`, true);
  return shapes;
}
