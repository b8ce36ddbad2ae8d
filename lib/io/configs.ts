// One zod schema per component class: the fields a loader needs, typed. Unknown fields are kept.
// Architecture sizes are required (a default would silently build a different network than the
// weights); every other field takes the default of the diffusers / transformers constructor, so
// configs saved by older versions (which lack newer parameters) load as the reference loads them.
import { z } from 'zod';

const posInt = z.int().positive();
const nonNegInt = z.int().nonnegative();
const posNum = z.number().positive();
const optionalString = z.string().optional();

/** Fields every diffusers config may carry. */
const diffusersMeta = {
  _class_name: optionalString,
  _diffusers_version: optionalString,
  _name_or_path: optionalString,
};

/** Fields every transformers config may carry. */
const transformersMeta = {
  architectures: z.array(z.string()).optional(),
  transformers_version: optionalString,
  torch_dtype: z.string().nullable().optional(),
  dtype: z.string().nullable().optional(),
};

const tokenId = z.int().nullable();

// ---- diffusers models ----

export const WanTransformer3DModelSchema = z.looseObject({
  ...diffusersMeta,
  patch_size: z.tuple([posInt, posInt, posInt]),
  num_attention_heads: posInt,
  attention_head_dim: posInt,
  in_channels: posInt,
  out_channels: posInt.nullable().default(16),
  text_dim: posInt,
  freq_dim: posInt.default(256),
  ffn_dim: posInt,
  num_layers: posInt,
  cross_attn_norm: z.boolean().default(true),
  qk_norm: z.string().nullable().default('rms_norm_across_heads'),
  eps: posNum.default(1e-6),
  image_dim: posInt.nullable().default(null),
  added_kv_proj_dim: posInt.nullable().default(null),
  rope_max_seq_len: posInt.default(1024),
  pos_embed_seq_len: posInt.nullable().default(null),
});

const WAN_LATENTS_MEAN = [
  -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517, -0.3632, -0.1922,
  -0.9497, 0.2503, -0.2921,
];
const WAN_LATENTS_STD = [
  2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253,
  2.8251, 1.916,
];

export const AutoencoderKLWanSchema = z.looseObject({
  ...diffusersMeta,
  base_dim: posInt,
  decoder_base_dim: posInt.nullable().default(null),
  z_dim: posInt,
  dim_mult: z.array(posInt).min(1),
  num_res_blocks: posInt,
  attn_scales: z.array(z.number()).default(() => []),
  temperal_downsample: z.array(z.boolean()),
  dropout: z.number().min(0).default(0),
  latents_mean: z.array(z.number()).default(() => [...WAN_LATENTS_MEAN]),
  latents_std: z.array(z.number()).default(() => [...WAN_LATENTS_STD]),
  is_residual: z.boolean().default(false),
  in_channels: posInt.default(3),
  out_channels: posInt.default(3),
  patch_size: posInt.nullable().default(null),
  scale_factor_temporal: posInt.nullable().default(4),
  scale_factor_spatial: posInt.nullable().default(8),
});

export const ZImageTransformer2DModelSchema = z.looseObject({
  ...diffusersMeta,
  all_patch_size: z.array(posInt).min(1),
  all_f_patch_size: z.array(posInt).min(1),
  in_channels: posInt,
  dim: posInt,
  n_layers: posInt,
  n_refiner_layers: nonNegInt,
  n_heads: posInt,
  n_kv_heads: posInt,
  norm_eps: posNum.default(1e-5),
  qk_norm: z.boolean().default(true),
  cap_feat_dim: posInt,
  siglip_feat_dim: posInt.nullable().default(null),
  rope_theta: posNum.default(256),
  t_scale: posNum.default(1000),
  axes_dims: z.array(posInt).min(1),
  axes_lens: z.array(posInt).min(1),
});

export const AutoencoderKLSchema = z.looseObject({
  ...diffusersMeta,
  in_channels: posInt.default(3),
  out_channels: posInt.default(3),
  down_block_types: z.array(z.string()).min(1),
  up_block_types: z.array(z.string()).min(1),
  block_out_channels: z.array(posInt).min(1),
  layers_per_block: posInt,
  act_fn: z.string().default('silu'),
  latent_channels: posInt,
  norm_num_groups: posInt.default(32),
  sample_size: posInt.default(32),
  scaling_factor: z.number().default(0.18215),
  shift_factor: z.number().nullable().default(null),
  latents_mean: z.array(z.number()).nullable().default(null),
  latents_std: z.array(z.number()).nullable().default(null),
  force_upcast: z.boolean().default(true),
  use_quant_conv: z.boolean().default(true),
  use_post_quant_conv: z.boolean().default(true),
  mid_block_add_attention: z.boolean().default(true),
});

export const Flux2Transformer2DModelSchema = z.looseObject({
  ...diffusersMeta,
  patch_size: posInt.default(1),
  in_channels: posInt,
  out_channels: posInt.nullable().default(null),
  num_layers: nonNegInt,
  num_single_layers: nonNegInt,
  attention_head_dim: posInt,
  num_attention_heads: posInt,
  joint_attention_dim: posInt,
  timestep_guidance_channels: posInt.default(256),
  mlp_ratio: posNum.default(3),
  axes_dims_rope: z.array(posInt).min(1).default(() => [32, 32, 32, 32]),
  rope_theta: posNum.default(2000),
  eps: posNum.default(1e-6),
  guidance_embeds: z.boolean().default(true),
});

export const AutoencoderKLFlux2Schema = z.looseObject({
  ...diffusersMeta,
  in_channels: posInt.default(3),
  out_channels: posInt.default(3),
  down_block_types: z.array(z.string()).min(1).default(() => Array(4).fill('DownEncoderBlock2D')),
  up_block_types: z.array(z.string()).min(1).default(() => Array(4).fill('UpDecoderBlock2D')),
  block_out_channels: z.array(posInt).min(1),
  decoder_block_out_channels: z.array(posInt).min(1).nullable().default(null),
  layers_per_block: posInt,
  act_fn: z.string().default('silu'),
  latent_channels: posInt,
  norm_num_groups: posInt.default(32),
  sample_size: posInt.default(1024),
  force_upcast: z.boolean().default(true),
  use_quant_conv: z.boolean().default(true),
  use_post_quant_conv: z.boolean().default(true),
  mid_block_add_attention: z.boolean().default(true),
  batch_norm_eps: posNum.default(1e-4),
  batch_norm_momentum: z.number().default(0.1),
  patch_size: z.tuple([posInt, posInt]).default([2, 2]),
});

// ---- diffusers schedulers ----

export const UniPCMultistepSchedulerSchema = z.looseObject({
  ...diffusersMeta,
  num_train_timesteps: posInt.default(1000),
  beta_start: z.number().default(0.0001),
  beta_end: z.number().default(0.02),
  beta_schedule: z.string().default('linear'),
  trained_betas: z.array(z.number()).nullable().default(null),
  solver_order: posInt.default(2),
  prediction_type: z.enum(['epsilon', 'sample', 'v_prediction', 'flow_prediction']).default('epsilon'),
  thresholding: z.boolean().default(false),
  dynamic_thresholding_ratio: z.number().default(0.995),
  sample_max_value: z.number().default(1.0),
  predict_x0: z.boolean().default(true),
  solver_type: z.enum(['bh1', 'bh2']).default('bh2'),
  lower_order_final: z.boolean().default(true),
  disable_corrector: z.array(nonNegInt).default(() => []),
  solver_p: z.null().default(null),
  use_karras_sigmas: z.boolean().default(false),
  use_exponential_sigmas: z.boolean().default(false),
  use_beta_sigmas: z.boolean().default(false),
  use_flow_sigmas: z.boolean().default(false),
  flow_shift: z.number().default(1.0),
  timestep_spacing: z.enum(['linspace', 'leading', 'trailing']).default('linspace'),
  steps_offset: nonNegInt.default(0),
  final_sigmas_type: z.enum(['zero', 'sigma_min']).default('zero'),
  rescale_betas_zero_snr: z.boolean().default(false),
  use_dynamic_shifting: z.boolean().default(false),
  time_shift_type: z.enum(['exponential']).default('exponential'),
  sigma_min: z.number().nullable().default(null),
  sigma_max: z.number().nullable().default(null),
  shift_terminal: z.number().nullable().default(null),
});

export const FlowMatchEulerDiscreteSchedulerSchema = z.looseObject({
  ...diffusersMeta,
  num_train_timesteps: posInt.default(1000),
  shift: z.number().default(1.0),
  use_dynamic_shifting: z.boolean().default(false),
  base_shift: z.number().nullable().default(0.5),
  max_shift: z.number().nullable().default(1.15),
  base_image_seq_len: posInt.default(256),
  max_image_seq_len: posInt.default(4096),
  invert_sigmas: z.boolean().default(false),
  shift_terminal: z.number().nullable().default(null),
  use_karras_sigmas: z.boolean().default(false),
  use_exponential_sigmas: z.boolean().default(false),
  use_beta_sigmas: z.boolean().default(false),
  time_shift_type: z.enum(['exponential', 'linear']).default('exponential'),
  stochastic_sampling: z.boolean().default(false),
});

// ---- transformers text encoders ----

/** T5-family fields; feed_forward_proj decides dense_act_fn / is_gated_act as T5Config does. */
function t5Schema(modelType: 't5' | 'umt5', defaultFeedForward: string) {
  return z
    .looseObject({
      ...transformersMeta,
      model_type: z.literal(modelType),
      vocab_size: posInt,
      d_model: posInt,
      d_kv: posInt,
      d_ff: posInt,
      num_layers: posInt,
      num_decoder_layers: posInt.nullable().default(null),
      num_heads: posInt,
      relative_attention_num_buckets: posInt.default(32),
      relative_attention_max_distance: posInt.default(128),
      dropout_rate: z.number().default(0.1),
      layer_norm_epsilon: posNum.default(1e-6),
      initializer_factor: z.number().default(1.0),
      feed_forward_proj: z
        .string()
        .regex(/^(gated-)?[a-z_]+$/, "must be '<act>' or 'gated-<act>' (e.g. 'relu', 'gated-gelu')")
        .default(defaultFeedForward),
      is_encoder_decoder: z.boolean().default(true),
      use_cache: z.boolean().default(true),
      pad_token_id: tokenId.default(0),
      eos_token_id: tokenId.default(1),
      decoder_start_token_id: tokenId.default(0),
      classifier_dropout: z.number().default(0.0),
      tie_word_embeddings: z.boolean().default(true),
    })
    .transform((c) => {
      const parts = c.feed_forward_proj.split('-');
      const gated = parts[0] === 'gated';
      return {
        ...c,
        num_decoder_layers: c.num_decoder_layers ?? c.num_layers,
        is_gated_act: gated,
        dense_act_fn: c.feed_forward_proj === 'gated-gelu' ? 'gelu_new' : parts[parts.length - 1]!,
      };
    });
}

export const UMT5EncoderModelSchema = t5Schema('umt5', 'gated-gelu');
export const T5EncoderModelSchema = t5Schema('t5', 'relu');

const ropeParameters = z.looseObject({ rope_type: z.string().default('default'), rope_theta: posNum.optional() });

/**
 * Qwen3Config: rope settings are normalised so both rope_theta and rope_parameters.rope_theta are
 * set (newer files carry rope_parameters, older ones rope_theta / rope_scaling).
 */
export const Qwen3ConfigSchema = z
  .looseObject({
    ...transformersMeta,
    model_type: z.literal('qwen3'),
    vocab_size: posInt,
    hidden_size: posInt,
    intermediate_size: posInt,
    num_hidden_layers: posInt,
    num_attention_heads: posInt,
    num_key_value_heads: posInt,
    head_dim: posInt,
    hidden_act: z.string().default('silu'),
    max_position_embeddings: posInt.default(32768),
    initializer_range: z.number().default(0.02),
    rms_norm_eps: posNum.default(1e-6),
    use_cache: z.boolean().default(true),
    tie_word_embeddings: z.boolean().default(false),
    rope_theta: posNum.optional(),
    rope_scaling: z.record(z.string(), z.unknown()).nullable().default(null),
    rope_parameters: ropeParameters.nullable().default(null),
    attention_bias: z.boolean().default(false),
    use_sliding_window: z.boolean().default(false),
    sliding_window: posInt.nullable().default(4096),
    max_window_layers: nonNegInt.default(28),
    layer_types: z.array(z.enum(['full_attention', 'sliding_attention'])).nullable().default(null),
    attention_dropout: z.number().default(0),
    pad_token_id: tokenId.default(null),
    bos_token_id: tokenId.default(null),
    eos_token_id: z.union([tokenId, z.array(z.int())]).default(null),
  })
  .transform((c) => {
    const ropeTheta = c.rope_parameters?.rope_theta ?? c.rope_theta ?? 10000;
    const ropeType =
      c.rope_parameters?.rope_type ??
      (typeof c.rope_scaling?.rope_type === 'string' ? c.rope_scaling.rope_type : typeof c.rope_scaling?.type === 'string' ? c.rope_scaling.type : 'default');
    const slidingWindow = c.use_sliding_window ? c.sliding_window : null;
    const layerTypes =
      c.layer_types ??
      Array.from({ length: c.num_hidden_layers }, (_, i) =>
        slidingWindow !== null && i >= c.max_window_layers ? ('sliding_attention' as const) : ('full_attention' as const),
      );
    return {
      ...c,
      rope_theta: ropeTheta,
      rope_parameters: { ...(c.rope_scaling ?? {}), ...(c.rope_parameters ?? {}), rope_type: ropeType, rope_theta: ropeTheta },
      sliding_window: slidingWindow,
      layer_types: layerTypes,
    };
  })
  .refine((c) => c.layer_types.length === c.num_hidden_layers, {
    message: 'layer_types must have one entry per hidden layer',
    path: ['layer_types'],
  });

// ---- registry ----

/** Schema and file name of every component class this project loads. */
export const COMPONENT_CLASSES = {
  WanTransformer3DModel: { file: 'config.json', schema: WanTransformer3DModelSchema },
  AutoencoderKLWan: { file: 'config.json', schema: AutoencoderKLWanSchema },
  UMT5EncoderModel: { file: 'config.json', schema: UMT5EncoderModelSchema },
  T5EncoderModel: { file: 'config.json', schema: T5EncoderModelSchema },
  UniPCMultistepScheduler: { file: 'scheduler_config.json', schema: UniPCMultistepSchedulerSchema },
  FlowMatchEulerDiscreteScheduler: { file: 'scheduler_config.json', schema: FlowMatchEulerDiscreteSchedulerSchema },
  ZImageTransformer2DModel: { file: 'config.json', schema: ZImageTransformer2DModelSchema },
  AutoencoderKL: { file: 'config.json', schema: AutoencoderKLSchema },
  Qwen3Model: { file: 'config.json', schema: Qwen3ConfigSchema },
  Qwen3ForCausalLM: { file: 'config.json', schema: Qwen3ConfigSchema },
  Flux2Transformer2DModel: { file: 'config.json', schema: Flux2Transformer2DModelSchema },
  AutoencoderKLFlux2: { file: 'config.json', schema: AutoencoderKLFlux2Schema },
} as const;

export type ComponentClass = keyof typeof COMPONENT_CLASSES;
export type ConfigOf<C extends ComponentClass> = z.output<(typeof COMPONENT_CLASSES)[C]['schema']>;

export type WanTransformer3DConfig = ConfigOf<'WanTransformer3DModel'>;
export type AutoencoderKLWanConfig = ConfigOf<'AutoencoderKLWan'>;
export type T5EncoderConfig = ConfigOf<'UMT5EncoderModel'>;
export type UniPCMultistepSchedulerConfig = ConfigOf<'UniPCMultistepScheduler'>;
export type FlowMatchEulerDiscreteSchedulerConfig = ConfigOf<'FlowMatchEulerDiscreteScheduler'>;
export type ZImageTransformer2DConfig = ConfigOf<'ZImageTransformer2DModel'>;
export type AutoencoderKLConfig = ConfigOf<'AutoencoderKL'>;
export type Qwen3Config = ConfigOf<'Qwen3Model'>;
export type Flux2Transformer2DConfig = ConfigOf<'Flux2Transformer2DModel'>;
export type AutoencoderKLFlux2Config = ConfigOf<'AutoencoderKLFlux2'>;

export function isComponentClass(name: string): name is ComponentClass {
  return Object.hasOwn(COMPONENT_CLASSES, name);
}

/** A config that does not fit its class; names the file and the field. */
export class ConfigError extends Error {
  readonly file: string;
  readonly field: string | undefined;
  constructor(file: string, message: string, field?: string) {
    super(`${file}: ${message}`);
    this.name = 'ConfigError';
    this.file = file;
    this.field = field;
  }
}

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const k of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** Validates raw config JSON of className (file names the source in errors) and fills defaults. */
export function parseComponentConfig<C extends ComponentClass>(className: C, raw: unknown, file: string): ConfigOf<C> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(file, 'config must be a JSON object');
  const schema = COMPONENT_CLASSES[className].schema as unknown as z.ZodType<ConfigOf<C>>;
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.map(String).join('.');
  const got = valueAt(raw, issue.path);
  if (got === undefined && issue.code === 'invalid_type')
    throw new ConfigError(file, `missing required field '${field}' (${className})`, field);
  throw new ConfigError(file, `field '${field}' of ${className}: ${issue.message} (got ${JSON.stringify(got)})`, field);
}
