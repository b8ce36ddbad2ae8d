// The tensors (diffusers names and shapes) of the Flux2Transformer2DModel and AutoencoderKLFlux2 a
// config describes. Used to write model folders with random weights (the demo model, real-config
// tests); the models check checkpoints against the same names. FLUX.2 has no bias anywhere in the
// transformer.
import type { AutoencoderKLFlux2Config, Flux2Transformer2DConfig } from '../../io/configs.js';
import { klAutoencoderTensorShapes, klStructure } from '../vae/layout.js';

export type TensorShapes = Array<[name: string, shape: number[]]>;

/** The widths the config implies: inner (heads x head_dim), the feed-forward hidden width, the output channels. */
export function flux2Widths(c: Flux2Transformer2DConfig): { inner: number; mlpHidden: number; outChannels: number } {
  const inner = c.num_attention_heads * c.attention_head_dim;
  return { inner, mlpHidden: Math.trunc(inner * c.mlp_ratio), outChannels: c.out_channels ?? c.in_channels };
}

export function flux2TransformerTensorShapes(c: Flux2Transformer2DConfig): TensorShapes {
  const { inner: d, mlpHidden: mlp, outChannels } = flux2Widths(c);
  const hd = c.attention_head_dim;
  const ch = c.timestep_guidance_channels;
  const shapes: TensorShapes = [
    ['time_guidance_embed.timestep_embedder.linear_1.weight', [d, ch]],
    ['time_guidance_embed.timestep_embedder.linear_2.weight', [d, d]],
  ];
  if (c.guidance_embeds)
    shapes.push(['time_guidance_embed.guidance_embedder.linear_1.weight', [d, ch]], ['time_guidance_embed.guidance_embedder.linear_2.weight', [d, d]]);
  shapes.push(
    ['double_stream_modulation_img.linear.weight', [6 * d, d]],
    ['double_stream_modulation_txt.linear.weight', [6 * d, d]],
    ['single_stream_modulation.linear.weight', [3 * d, d]],
    ['x_embedder.weight', [d, c.in_channels]],
    ['context_embedder.weight', [d, c.joint_attention_dim]],
  );
  for (let i = 0; i < c.num_layers; ++i) {
    const b = `transformer_blocks.${i}`;
    shapes.push(
      [`${b}.attn.to_q.weight`, [d, d]],
      [`${b}.attn.to_k.weight`, [d, d]],
      [`${b}.attn.to_v.weight`, [d, d]],
      [`${b}.attn.norm_q.weight`, [hd]],
      [`${b}.attn.norm_k.weight`, [hd]],
      [`${b}.attn.to_out.0.weight`, [d, d]],
      [`${b}.attn.norm_added_q.weight`, [hd]],
      [`${b}.attn.norm_added_k.weight`, [hd]],
      [`${b}.attn.add_q_proj.weight`, [d, d]],
      [`${b}.attn.add_k_proj.weight`, [d, d]],
      [`${b}.attn.add_v_proj.weight`, [d, d]],
      [`${b}.attn.to_add_out.weight`, [d, d]],
      [`${b}.ff.linear_in.weight`, [2 * mlp, d]],
      [`${b}.ff.linear_out.weight`, [d, mlp]],
      [`${b}.ff_context.linear_in.weight`, [2 * mlp, d]],
      [`${b}.ff_context.linear_out.weight`, [d, mlp]],
    );
  }
  for (let i = 0; i < c.num_single_layers; ++i) {
    const b = `single_transformer_blocks.${i}`;
    shapes.push(
      [`${b}.attn.to_qkv_mlp_proj.weight`, [3 * d + 2 * mlp, d]],
      [`${b}.attn.norm_q.weight`, [hd]],
      [`${b}.attn.norm_k.weight`, [hd]],
      [`${b}.attn.to_out.weight`, [d, d + mlp]],
    );
  }
  shapes.push(['norm_out.linear.weight', [2 * d, d]], ['proj_out.weight', [c.patch_size * c.patch_size * outChannels, d]]);
  return shapes;
}

/**
 * AutoencoderKLFlux2: the KL autoencoder's tensors plus the batch norm over the patchified latents
 * (running statistics only, no affine; num_batches_tracked is an int64 scalar).
 */
export function flux2VaeTensorShapes(c: AutoencoderKLFlux2Config): TensorShapes {
  const bnChannels = c.patch_size[0] * c.patch_size[1] * c.latent_channels;
  return [
    ...klAutoencoderTensorShapes(klStructure(c, 'AutoencoderKLFlux2')),
    ['bn.running_mean', [bnChannels]],
    ['bn.running_var', [bnChannels]],
    ['bn.num_batches_tracked', []],
  ];
}
