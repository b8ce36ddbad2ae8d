// The structure of the KL autoencoders built on diffusers' vae.py Encoder/Decoder (AutoencoderKL, and
// AutoencoderKLFlux2 which adds a batch norm around the same parts), and the tensors (names and
// shapes) it implies. The tensor list is used to write model folders with random weights (demo
// models, real-config tests); the model checks checkpoints against the same names.

export type TensorShapes = Array<[name: string, shape: number[]]>;

/** What the Encoder, Decoder and quant convs are built from (the config fields both classes share). */
export interface KLStructure {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  /** encoder widths per level (top level first) */
  blockOutChannels: number[];
  /** decoder widths per level (AutoencoderKLFlux2's decoder_block_out_channels; else the encoder's) */
  decoderBlockOutChannels: number[];
  layersPerBlock: number;
  normNumGroups: number;
  midBlockAddAttention: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
}

/** The config fields of AutoencoderKL / AutoencoderKLFlux2 that decide the structure. */
export interface KLStructureConfig {
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  decoder_block_out_channels?: number[] | null;
  down_block_types: string[];
  up_block_types: string[];
  layers_per_block: number;
  norm_num_groups: number;
  act_fn: string;
  mid_block_add_attention: boolean;
  use_quant_conv: boolean;
  use_post_quant_conv: boolean;
}

/** Validates a config against what the Encoder/Decoder implement and returns its structure. */
export function klStructure(c: KLStructureConfig, className: string): KLStructure {
  const fail = (msg: string) => {
    throw new Error(`${className}: ${msg}`);
  };
  const levels = c.block_out_channels.length;
  const decoderChannels = c.decoder_block_out_channels ?? c.block_out_channels;
  if (c.down_block_types.length !== levels || c.up_block_types.length !== decoderChannels.length)
    fail(`down_block_types / up_block_types must have one entry per level (${levels})`);
  if (c.down_block_types.some((t) => t !== 'DownEncoderBlock2D')) fail(`down_block_types [${c.down_block_types}] are not supported (DownEncoderBlock2D)`);
  if (c.up_block_types.some((t) => t !== 'UpDecoderBlock2D')) fail(`up_block_types [${c.up_block_types}] are not supported (UpDecoderBlock2D)`);
  if (c.act_fn !== 'silu') fail(`act_fn '${c.act_fn}' is not supported (silu)`);
  for (const ch of [...c.block_out_channels, ...decoderChannels])
    if (ch % c.norm_num_groups !== 0) fail(`block width ${ch} is not a multiple of norm_num_groups ${c.norm_num_groups}`);
  return {
    inChannels: c.in_channels,
    outChannels: c.out_channels,
    latentChannels: c.latent_channels,
    blockOutChannels: [...c.block_out_channels],
    decoderBlockOutChannels: [...decoderChannels],
    layersPerBlock: c.layers_per_block,
    normNumGroups: c.norm_num_groups,
    midBlockAddAttention: c.mid_block_add_attention,
    useQuantConv: c.use_quant_conv,
    usePostQuantConv: c.use_post_quant_conv,
  };
}

export function klAutoencoderTensorShapes(s: KLStructure): TensorShapes {
  const shapes: TensorShapes = [];
  const conv = (name: string, o: number, i: number, k = 3) => shapes.push([`${name}.weight`, [o, i, k, k]], [`${name}.bias`, [o]]);
  const norm = (name: string, ch: number) => shapes.push([`${name}.weight`, [ch]], [`${name}.bias`, [ch]]);
  const resnet = (name: string, i: number, o: number) => {
    norm(`${name}.norm1`, i);
    conv(`${name}.conv1`, o, i);
    norm(`${name}.norm2`, o);
    conv(`${name}.conv2`, o, o);
    if (i !== o) conv(`${name}.conv_shortcut`, o, i, 1);
  };
  const mid = (name: string, ch: number) => {
    resnet(`${name}.resnets.0`, ch, ch);
    if (s.midBlockAddAttention) {
      norm(`${name}.attentions.0.group_norm`, ch);
      for (const proj of ['to_q', 'to_k', 'to_v', 'to_out.0']) shapes.push([`${name}.attentions.0.${proj}.weight`, [ch, ch]], [`${name}.attentions.0.${proj}.bias`, [ch]]);
    }
    resnet(`${name}.resnets.1`, ch, ch);
  };
  // encoder
  const enc = s.blockOutChannels;
  conv('encoder.conv_in', enc[0]!, s.inChannels);
  let ch = enc[0]!;
  enc.forEach((out, i) => {
    for (let j = 0; j < s.layersPerBlock; ++j) resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? ch : out, out);
    if (i < enc.length - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, out, out);
    ch = out;
  });
  mid('encoder.mid_block', ch);
  norm('encoder.conv_norm_out', ch);
  conv('encoder.conv_out', 2 * s.latentChannels, ch);
  if (s.useQuantConv) conv('quant_conv', 2 * s.latentChannels, 2 * s.latentChannels, 1);
  if (s.usePostQuantConv) conv('post_quant_conv', s.latentChannels, s.latentChannels, 1);
  // decoder
  const dec = [...s.decoderBlockOutChannels].reverse();
  conv('decoder.conv_in', dec[0]!, s.latentChannels);
  mid('decoder.mid_block', dec[0]!);
  ch = dec[0]!;
  dec.forEach((out, i) => {
    for (let j = 0; j < s.layersPerBlock + 1; ++j) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? ch : out, out);
    if (i < dec.length - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, out, out);
    ch = out;
  });
  norm('decoder.conv_norm_out', ch);
  conv('decoder.conv_out', s.outChannels, ch);
  return shapes;
}
