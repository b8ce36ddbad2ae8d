// demo:zimage — a tiny Z-Image-Turbo text-to-image model with deterministic random weights in the
// real diffusers folder layout (model_index.json, per-component configs, a sharded bf16 transformer,
// a bf16 Qwen3 text encoder, the real Qwen3 tokenizer, a 16-channel AutoencoderKL), so every route and
// the CLI can be tried on any machine in seconds.
import { parseComponentConfig } from '../../io/configs.js';
import { bundledQwen3TokenizerDir } from '../../io/tokenizer.js';
import { qwen3TensorShapes } from '../../models/qwen3/layout.js';
import { klAutoencoderTensorShapes, klStructure } from '../../models/vae/layout.js';
import { zimageTransformerTensorShapes } from '../../models/zimage/layout.js';
import { registerDemo } from '../load.js';
import { writeDemoFolder } from './weights.js';

/** Bumped whenever the generated folder changes. */
const DEMO_ZIMAGE_VERSION = 1;

const MODEL_INDEX = {
  _class_name: 'ZImagePipeline',
  _diffusers_version: '0.36.0.dev0',
  scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
  text_encoder: ['transformers', 'Qwen3Model'],
  tokenizer: ['transformers', 'Qwen2Tokenizer'],
  transformer: ['diffusers', 'ZImageTransformer2DModel'],
  vae: ['diffusers', 'AutoencoderKL'],
  // request defaults sized for the tiny model: Turbo's 9 steps, at 64x64
  _sampling_defaults: { width: 64, height: 64 },
};

/** Z-Image-Turbo's scheduler configuration. */
const SCHEDULER = {
  _class_name: 'FlowMatchEulerDiscreteScheduler',
  _diffusers_version: '0.36.0.dev0',
  num_train_timesteps: 1000,
  shift: 3.0,
  use_dynamic_shifting: false,
};

/** Qwen3 with the real vocabulary (the tokenizer's ids index it) and tiny widths. */
const TEXT_ENCODER = {
  architectures: ['Qwen3Model'],
  model_type: 'qwen3',
  vocab_size: 151936,
  hidden_size: 32,
  intermediate_size: 64,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
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
  torch_dtype: 'bfloat16',
};

const TRANSFORMER = {
  _class_name: 'ZImageTransformer2DModel',
  _diffusers_version: '0.36.0.dev0',
  all_f_patch_size: [1],
  all_patch_size: [2],
  axes_dims: [8, 12, 12],
  axes_lens: [1536, 512, 512],
  cap_feat_dim: 32,
  dim: 64,
  in_channels: 16,
  n_heads: 2,
  n_kv_heads: 2,
  n_layers: 2,
  n_refiner_layers: 1,
  norm_eps: 1e-5,
  qk_norm: true,
  rope_theta: 256.0,
  t_scale: 1000.0,
};

const VAE = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.36.0.dev0',
  act_fn: 'silu',
  block_out_channels: [16, 32, 32, 32],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  in_channels: 3,
  out_channels: 3,
  latent_channels: 16,
  layers_per_block: 1,
  norm_num_groups: 8,
  mid_block_add_attention: true,
  sample_size: 1024,
  scaling_factor: 0.3611,
  shift_factor: 0.1159,
  force_upcast: true,
  use_quant_conv: false,
  use_post_quant_conv: false,
};

/** Generates the demo:zimage folder into dir. */
export async function generateDemoZImage(dir: string): Promise<void> {
  await writeDemoFolder(dir, {
    modelIndex: MODEL_INDEX,
    scheduler: SCHEDULER,
    tokenizer: { dir: bundledQwen3TokenizerDir(), files: ['tokenizer.json', 'tokenizer_config.json'] },
    components: [
      {
        name: 'text_encoder',
        config: TEXT_ENCODER,
        shapes: qwen3TensorShapes(parseComponentConfig('Qwen3Model', TEXT_ENCODER, 'demo text_encoder')),
        dtype: 'bfloat16',
        stem: 'model',
      },
      {
        name: 'transformer',
        config: TRANSFORMER,
        shapes: zimageTransformerTensorShapes(parseComponentConfig('ZImageTransformer2DModel', TRANSFORMER, 'demo transformer')),
        dtype: 'bfloat16',
        stem: 'diffusion_pytorch_model',
        shards: 2,
      },
      {
        name: 'vae',
        config: VAE,
        shapes: klAutoencoderTensorShapes(klStructure(parseComponentConfig('AutoencoderKL', VAE, 'demo vae'), 'AutoencoderKL')),
        dtype: 'float32',
        stem: 'diffusion_pytorch_model',
      },
    ],
  });
}

registerDemo('zimage', DEMO_ZIMAGE_VERSION, generateDemoZImage);
