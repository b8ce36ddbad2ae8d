// demo:wan — a tiny Wan2.1 text-to-video model with deterministic random weights in the real
// diffusers folder layout (model_index.json, per-component configs, a sharded transformer, a bf16
// text encoder, a T5 tokenizer), so every route and the CLI can be tried on any machine in seconds.
import { join } from 'node:path';
import { packageRoot } from '../../engine/native.js';
import { parseComponentConfig } from '../../io/configs.js';
import { umt5EncoderTensorShapes } from '../../models/t5/layout.js';
import { wanTransformerTensorShapes, wanVaeTensorShapes } from '../../models/wan/layout.js';
import { registerDemo } from '../load.js';
import { fanInStd, type Init, writeDemoFolder } from './weights.js';

/** Bumped whenever the generated folder changes. */
const DEMO_WAN_VERSION = 1;

/** The tokenizer of the demo (a small Unigram T5 tokenizer, 278 tokens), shipped in the package. */
export const DEMO_WAN_TOKENIZER_DIR = join(packageRoot, 'assets', 'demo-wan-tokenizer');

const MODEL_INDEX = {
  _class_name: 'WanPipeline',
  _diffusers_version: '0.33.0',
  scheduler: ['diffusers', 'UniPCMultistepScheduler'],
  text_encoder: ['transformers', 'UMT5EncoderModel'],
  tokenizer: ['transformers', 'T5TokenizerFast'],
  transformer: ['diffusers', 'WanTransformer3DModel'],
  vae: ['diffusers', 'AutoencoderKLWan'],
  // request defaults sized for the tiny model: one second of 64x64 video in 4 steps
  _sampling_defaults: { width: 64, height: 64, num_frames: 17, num_inference_steps: 4 },
};

/** Wan2.1's scheduler configuration (flow UniPC, shift 3). */
const SCHEDULER = {
  _class_name: 'UniPCMultistepScheduler',
  _diffusers_version: '0.33.0',
  beta_end: 0.02,
  beta_schedule: 'linear',
  beta_start: 0.0001,
  disable_corrector: [],
  dynamic_thresholding_ratio: 0.995,
  final_sigmas_type: 'zero',
  flow_shift: 3.0,
  lower_order_final: true,
  num_train_timesteps: 1000,
  predict_x0: true,
  prediction_type: 'flow_prediction',
  rescale_betas_zero_snr: false,
  sample_max_value: 1.0,
  solver_order: 2,
  solver_p: null,
  solver_type: 'bh2',
  steps_offset: 0,
  thresholding: false,
  timestep_spacing: 'linspace',
  trained_betas: null,
  use_beta_sigmas: false,
  use_exponential_sigmas: false,
  use_flow_sigmas: true,
  use_karras_sigmas: false,
};

const TEXT_ENCODER = {
  architectures: ['UMT5EncoderModel'],
  model_type: 'umt5',
  vocab_size: 278,
  d_model: 32,
  d_kv: 8,
  d_ff: 64,
  num_heads: 4,
  num_layers: 2,
  relative_attention_num_buckets: 32,
  relative_attention_max_distance: 128,
  dense_act_fn: 'gelu_new',
  feed_forward_proj: 'gated-gelu',
  is_gated_act: true,
  layer_norm_epsilon: 1e-6,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
};

const TRANSFORMER = {
  _class_name: 'WanTransformer3DModel',
  _diffusers_version: '0.33.0',
  added_kv_proj_dim: null,
  attention_head_dim: 16,
  cross_attn_norm: true,
  eps: 1e-6,
  ffn_dim: 64,
  freq_dim: 256,
  image_dim: null,
  in_channels: 16,
  num_attention_heads: 2,
  num_layers: 2,
  out_channels: 16,
  patch_size: [1, 2, 2],
  qk_norm: 'rms_norm_across_heads',
  rope_max_seq_len: 1024,
  text_dim: 32,
};

const VAE = {
  _class_name: 'AutoencoderKLWan',
  _diffusers_version: '0.33.0',
  attn_scales: [],
  base_dim: 8,
  dim_mult: [1, 2, 2, 2],
  dropout: 0.0,
  num_res_blocks: 1,
  temperal_downsample: [false, true, true],
  z_dim: 16,
};

/**
 * How each tensor is initialised, scaled like a trained network so activations stay in range: norm
 * gains 1 and norm biases 0, other biases small, matrices 1/sqrt(fan_in), the modulation tables
 * 1/sqrt(dim) (diffusers' init), embeddings of unit scale.
 */
function wanInit(name: string, shape: number[]): Init {
  const isNormGain = /(norm[^.]*|norm_[qk])\.(weight|gamma)$/.test(name) || name.endsWith('.gamma');
  if (isNormGain) return 'one';
  if (/norm[^.]*\.bias$/.test(name)) return 'zero';
  if (name.endsWith('.bias')) return 0.02;
  if (name.endsWith('scale_shift_table')) return 1 / Math.sqrt(shape[shape.length - 1] as number);
  if (name === 'shared.weight') return 1;
  if (name.endsWith('relative_attention_bias.weight')) return 0.5;
  return fanInStd(shape);
}

/** Generates the demo:wan folder into dir. */
export async function generateDemoWan(dir: string): Promise<void> {
  await writeDemoFolder(dir, {
    modelIndex: MODEL_INDEX,
    scheduler: SCHEDULER,
    tokenizer: { dir: DEMO_WAN_TOKENIZER_DIR },
    components: [
      {
        name: 'text_encoder',
        config: TEXT_ENCODER,
        shapes: umt5EncoderTensorShapes(parseComponentConfig('UMT5EncoderModel', TEXT_ENCODER, 'demo text_encoder')),
        dtype: 'bfloat16',
        stem: 'model',
        init: wanInit,
      },
      {
        name: 'transformer',
        config: TRANSFORMER,
        shapes: wanTransformerTensorShapes(parseComponentConfig('WanTransformer3DModel', TRANSFORMER, 'demo transformer')),
        dtype: 'float32',
        stem: 'diffusion_pytorch_model',
        shards: 2,
        init: wanInit,
      },
      {
        name: 'vae',
        config: VAE,
        shapes: wanVaeTensorShapes(parseComponentConfig('AutoencoderKLWan', VAE, 'demo vae')),
        dtype: 'float32',
        stem: 'diffusion_pytorch_model',
        init: wanInit,
      },
    ],
  });
}

registerDemo('wan', DEMO_WAN_VERSION, generateDemoWan);
