// demo:flux2-klein — a tiny FLUX.2-klein (text-to-image and image editing) with deterministic random
// weights in the real diffusers folder layout: model_index.json with is_distilled (4 steps, no CFG, as
// FLUX.2-klein-4B), a 28-layer Qwen3ForCausalLM text encoder in bf16 (deep enough for the pipeline's
// hidden states 9, 18, 27) with the real Qwen3 tokenizer, a bf16 Flux2Transformer2DModel with 2 double-
// and 2 single-stream blocks, and an AutoencoderKLFlux2 with batch-norm statistics, so every route
// (edits included) and the CLI can be tried on any machine in seconds.
import { affine, exp } from '../../engine/ops/basic.js';
import { randn, scope, type Tensor, tensor } from '../../engine/tensor.js';
import { parseComponentConfig } from '../../io/configs.js';
import { bundledQwen3TokenizerDir } from '../../io/tokenizer.js';
import { flux2TransformerTensorShapes, flux2VaeTensorShapes } from '../../models/flux2/layout.js';
import { qwen3TensorShapes } from '../../models/qwen3/layout.js';
import { registerDemo } from '../load.js';
import { writeDemoFolder } from './weights.js';

/** Bumped whenever the generated folder changes. */
const DEMO_FLUX2_KLEIN_VERSION = 1;

const MODEL_INDEX = {
  _class_name: 'Flux2KleinPipeline',
  _diffusers_version: '0.37.0.dev0',
  is_distilled: true,
  scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
  text_encoder: ['transformers', 'Qwen3ForCausalLM'],
  tokenizer: ['transformers', 'Qwen2TokenizerFast'],
  transformer: ['diffusers', 'Flux2Transformer2DModel'],
  vae: ['diffusers', 'AutoencoderKLFlux2'],
  // request defaults sized for the tiny model: klein's 4 steps, at 64x64
  _sampling_defaults: { width: 64, height: 64 },
};

/** FLUX.2-klein-4B's scheduler configuration. */
const SCHEDULER = {
  _class_name: 'FlowMatchEulerDiscreteScheduler',
  _diffusers_version: '0.37.0.dev0',
  base_image_seq_len: 256,
  base_shift: 0.5,
  invert_sigmas: false,
  max_image_seq_len: 4096,
  max_shift: 1.15,
  num_train_timesteps: 1000,
  shift: 3.0,
  shift_terminal: null,
  stochastic_sampling: false,
  time_shift_type: 'exponential',
  use_beta_sigmas: false,
  use_dynamic_shifting: true,
  use_exponential_sigmas: false,
  use_karras_sigmas: false,
};

/** Qwen3 with the real vocabulary (the tokenizer's ids index it), 28 layers and tiny widths. */
const TEXT_ENCODER = {
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  vocab_size: 151936,
  hidden_size: 16,
  intermediate_size: 32,
  num_hidden_layers: 28,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  head_dim: 8,
  hidden_act: 'silu',
  max_position_embeddings: 40960,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  attention_bias: false,
  tie_word_embeddings: true,
  use_sliding_window: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
  dtype: 'bfloat16',
};

/** joint_attention_dim = 3 stacked hidden states x 16. */
const TRANSFORMER = {
  _class_name: 'Flux2Transformer2DModel',
  _diffusers_version: '0.37.0.dev0',
  attention_head_dim: 16,
  axes_dims_rope: [4, 4, 4, 4],
  eps: 1e-6,
  guidance_embeds: false,
  in_channels: 128,
  joint_attention_dim: 48,
  mlp_ratio: 3.0,
  num_attention_heads: 2,
  num_layers: 2,
  num_single_layers: 2,
  out_channels: null,
  patch_size: 1,
  rope_theta: 2000,
  timestep_guidance_channels: 256,
};

const VAE = {
  _class_name: 'AutoencoderKLFlux2',
  _diffusers_version: '0.37.0.dev0',
  act_fn: 'silu',
  batch_norm_eps: 0.0001,
  batch_norm_momentum: 0.1,
  block_out_channels: [16, 32, 32, 32],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  force_upcast: true,
  in_channels: 3,
  out_channels: 3,
  latent_channels: 32,
  layers_per_block: 1,
  mid_block_add_attention: true,
  norm_num_groups: 8,
  patch_size: [2, 2],
  sample_size: 1024,
  use_post_quant_conv: true,
  use_quant_conv: true,
};

/**
 * The VAE's batch-norm buffers: running means around 0 (std 0.1), running variances around 1
 * (e^N(0, 0.2), always positive), and the int64 step counter.
 */
function batchNormBuffers(channels: number, seed: number): Record<string, Tensor> {
  return {
    'bn.running_mean': scope(() => affine(randn([channels], { seed }), 0.1, 0)),
    'bn.running_var': scope(() => exp(affine(randn([channels], { seed: seed + 1 }), 0.2, 0))),
    'bn.num_batches_tracked': tensor(new BigInt64Array([0n]), []),
  };
}

/** Generates the demo:flux2-klein folder into dir. */
export async function generateDemoFlux2Klein(dir: string): Promise<void> {
  const vaeConfig = parseComponentConfig('AutoencoderKLFlux2', VAE, 'demo vae');
  await writeDemoFolder(dir, {
    modelIndex: MODEL_INDEX,
    scheduler: SCHEDULER,
    tokenizer: { dir: bundledQwen3TokenizerDir(), files: ['tokenizer.json', 'tokenizer_config.json'] },
    components: [
      {
        name: 'text_encoder',
        config: TEXT_ENCODER,
        shapes: qwen3TensorShapes(parseComponentConfig('Qwen3ForCausalLM', TEXT_ENCODER, 'demo text_encoder'), 'model.'),
        dtype: 'bfloat16',
        stem: 'model',
      },
      {
        name: 'transformer',
        config: TRANSFORMER,
        shapes: flux2TransformerTensorShapes(parseComponentConfig('Flux2Transformer2DModel', TRANSFORMER, 'demo transformer')),
        dtype: 'bfloat16',
        stem: 'diffusion_pytorch_model',
      },
      {
        name: 'vae',
        config: VAE,
        shapes: flux2VaeTensorShapes(vaeConfig).filter(([name]) => !name.startsWith('bn.')),
        dtype: 'float32',
        stem: 'diffusion_pytorch_model',
        extra: (seed) => batchNormBuffers(4 * vaeConfig.latent_channels, seed),
      },
    ],
  });
}

registerDemo('flux2-klein', DEMO_FLUX2_KLEIN_VERSION, generateDemoFlux2Klein);
