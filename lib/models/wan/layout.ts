// The tensors (diffusers names and shapes) of the Wan2.1 checkpoints a config describes: the
// WanTransformer3DModel and the AutoencoderKLWan. Used to write model folders with random weights
// (the demo model, real-config tests); the loaders check real checkpoints against the same names.
import type { AutoencoderKLWanConfig, WanTransformer3DConfig } from '../../io/configs.js';

export type TensorShapes = Array<[name: string, shape: number[]]>;

export function wanTransformerTensorShapes(c: WanTransformer3DConfig): TensorShapes {
  const inner = c.num_attention_heads * c.attention_head_dim;
  const [pt, ph, pw] = c.patch_size;
  const out = c.out_channels ?? c.in_channels;
  const linear = (name: string, o: number, i: number): TensorShapes => [
    [`${name}.weight`, [o, i]],
    [`${name}.bias`, [o]],
  ];
  const shapes: TensorShapes = [
    ['scale_shift_table', [1, 2, inner]],
    ['patch_embedding.weight', [inner, c.in_channels, pt, ph, pw]],
    ['patch_embedding.bias', [inner]],
    ...linear('condition_embedder.time_embedder.linear_1', inner, c.freq_dim),
    ...linear('condition_embedder.time_embedder.linear_2', inner, inner),
    ...linear('condition_embedder.time_proj', 6 * inner, inner),
    ...linear('condition_embedder.text_embedder.linear_1', inner, c.text_dim),
    ...linear('condition_embedder.text_embedder.linear_2', inner, inner),
  ];
  for (let i = 0; i < c.num_layers; ++i) {
    const b = `blocks.${i}`;
    shapes.push([`${b}.scale_shift_table`, [1, 6, inner]]);
    for (const a of ['attn1', 'attn2']) {
      for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) shapes.push(...linear(`${b}.${a}.${p}`, inner, inner));
      shapes.push([`${b}.${a}.norm_q.weight`, [inner]], [`${b}.${a}.norm_k.weight`, [inner]]);
    }
    if (c.cross_attn_norm) shapes.push([`${b}.norm2.weight`, [inner]], [`${b}.norm2.bias`, [inner]]);
    shapes.push(...linear(`${b}.ffn.net.0.proj`, c.ffn_dim, inner), ...linear(`${b}.ffn.net.2`, inner, c.ffn_dim));
  }
  shapes.push(...linear('proj_out', out * pt * ph * pw, inner));
  return shapes;
}

/** AutoencoderKLWan (Wan2.1: no residual up/down blocks, no attention in the down/up blocks). */
export function wanVaeTensorShapes(c: AutoencoderKLWanConfig): TensorShapes {
  const shapes: TensorShapes = [];
  const conv3 = (name: string, o: number, i: number, k: number[] = [3, 3, 3]) =>
    shapes.push([`${name}.weight`, [o, i, ...k]], [`${name}.bias`, [o]]);
  const resBlock = (name: string, i: number, o: number) => {
    shapes.push([`${name}.norm1.gamma`, [i, 1, 1, 1]]);
    conv3(`${name}.conv1`, o, i);
    shapes.push([`${name}.norm2.gamma`, [o, 1, 1, 1]]);
    conv3(`${name}.conv2`, o, o);
    if (i !== o) conv3(`${name}.conv_shortcut`, o, i, [1, 1, 1]);
  };
  const midBlock = (name: string, d: number) => {
    resBlock(`${name}.resnets.0`, d, d);
    shapes.push([`${name}.attentions.0.norm.gamma`, [d, 1, 1]]);
    conv3(`${name}.attentions.0.to_qkv`, 3 * d, d, [1, 1]);
    conv3(`${name}.attentions.0.proj`, d, d, [1, 1]);
    resBlock(`${name}.resnets.1`, d, d);
  };
  const z = c.z_dim;
  const nLevels = c.dim_mult.length;

  // encoder: flat down_blocks list of resnets and resamplers
  const encDims = [1, ...c.dim_mult].map((m) => c.base_dim * m);
  conv3('encoder.conv_in', encDims[0]!, c.in_channels);
  let k = 0;
  for (let level = 0; level < nLevels; ++level) {
    let inDim = encDims[level]!;
    const outDim = encDims[level + 1]!;
    for (let r = 0; r < c.num_res_blocks; ++r) {
      resBlock(`encoder.down_blocks.${k++}`, inDim, outDim);
      inDim = outDim;
    }
    if (level !== nLevels - 1) {
      const name = `encoder.down_blocks.${k++}`;
      conv3(`${name}.resample.1`, outDim, outDim, [3, 3]);
      if (c.temperal_downsample[level]) conv3(`${name}.time_conv`, outDim, outDim, [3, 1, 1]);
    }
  }
  const top = encDims[encDims.length - 1]!;
  midBlock('encoder.mid_block', top);
  shapes.push(['encoder.norm_out.gamma', [top, 1, 1, 1]]);
  conv3('encoder.conv_out', 2 * z, top);
  conv3('quant_conv', 2 * z, 2 * z, [1, 1, 1]);
  conv3('post_quant_conv', z, z, [1, 1, 1]);

  // decoder: up_blocks of num_res_blocks + 1 resnets and an upsampler that halves the channels
  const decBase = c.decoder_base_dim ?? c.base_dim;
  const rev = [...c.dim_mult].reverse();
  const decDims = [rev[0]!, ...rev].map((m) => decBase * m);
  const temporalUp = [...c.temperal_downsample].reverse();
  conv3('decoder.conv_in', decDims[0]!, z);
  midBlock('decoder.mid_block', decDims[0]!);
  for (let level = 0; level < nLevels; ++level) {
    let inDim = level > 0 ? decDims[level]! / 2 : decDims[level]!;
    const outDim = decDims[level + 1]!;
    for (let r = 0; r <= c.num_res_blocks; ++r) {
      resBlock(`decoder.up_blocks.${level}.resnets.${r}`, inDim, outDim);
      inDim = outDim;
    }
    if (level !== nLevels - 1) {
      const name = `decoder.up_blocks.${level}.upsamplers.0`;
      conv3(`${name}.resample.1`, outDim / 2, outDim, [3, 3]);
      if (temporalUp[level]) conv3(`${name}.time_conv`, 2 * outDim, outDim, [3, 1, 1]);
    }
  }
  const last = decDims[decDims.length - 1]!;
  shapes.push(['decoder.norm_out.gamma', [last, 1, 1, 1]]);
  conv3('decoder.conv_out', c.out_channels, last);
  return shapes;
}
