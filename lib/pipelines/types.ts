// The contract between pipelines (lib/pipelines/*.ts) and their callers (the Node API, the
// CLI, the worker runtime and the server).
import type { Tensor } from '../engine/tensor.js';

export type TaskType = 'T2V' | 'I2V' | 'TI2V' | 'T2I' | 'I2I' | 'TI2I';

/** An 8-bit RGB picture, row-major, 3 bytes per pixel. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface PipelineDefaults {
  width: number;
  height: number;
  numFrames: number; // 1 for image models
  fps: number; // 0 for image models
  numInferenceSteps: number;
  guidanceScale: number;
  negativePrompt: string;
}

export interface PipelineInfo {
  modelPath: string;
  /** diffusers class from model_index.json, e.g. WanPipeline */
  pipelineClass: string;
  /** upstream-style short name, e.g. wan_pipeline */
  pipelineName: string;
  taskType: TaskType;
  defaults: PipelineDefaults;
  ditPrecision: string;
  vaePrecision: string;
  device: string;
  /** how many reference images the model accepts (0: text only) */
  maxInputImages: number;
  /** LoRA targets present in this model (transformer, transformer_2, ...) */
  loraTargets: string[];
}

export type Stage = 'encode_prompt' | 'prepare_latents' | 'denoise' | 'decode' | 'encode_images';

export interface Progress {
  stage: Stage;
  /** denoising step just finished (1-based); 0 outside denoising */
  step: number;
  totalSteps: number;
  /** milliseconds the last step took */
  stepMs: number;
  /**
   * Decodes the current latents of output items [from, from + count) (default: all) into a preview
   * (costs a VAE decode): one image per item, or a video pipeline's frames of the first of them.
   */
  preview?: (from?: number, count?: number) => RgbImage[];
}

export interface GenerateRequest {
  prompt: string | string[];
  negativePrompt?: string;
  width?: number;
  height?: number;
  numFrames?: number;
  fps?: number;
  numInferenceSteps?: number;
  guidanceScale?: number;
  /** outputs per prompt */
  numOutputs?: number;
  seed?: number;
  /**
   * One seed per output item (prompts x numOutputs, each prompt's outputs together) instead of
   * seed, seed + 1, ...: item j's noise is what a request of its own with `seed: seeds[j]` would get
   * for its first output. Lets requests run as one batch with the noise each would get alone.
   */
  seeds?: number[];
  /** reference images for editing / image-to-video */
  images?: RgbImage[];
  /** initial noise instead of seeded noise */
  latents?: Tensor;
  /** 'rgb' (default), 'float' (also keep [0,1] float tensors) or 'latent' (stop before decoding) */
  outputType?: 'rgb' | 'float' | 'latent';
  /** called after every stage and denoising step; may be async (awaited) */
  onProgress?: (p: Progress) => void | Promise<void>;
  /** aborts at the next step boundary with an AbortError */
  signal?: AbortSignal;
}

export interface GenerateResult {
  /** one entry per output: a single image, or the frames of a video */
  outputs: RgbImage[][];
  /** float outputs in [0,1] ([B,H,W,3] or [B,F,H,W,3]) when outputType is 'float' */
  floatOutput?: Tensor;
  /** final latents when outputType is 'latent' or 'float' */
  latents?: Tensor;
  width: number;
  height: number;
  numFrames: number;
  fps: number;
  seed: number;
  /** milliseconds per stage */
  timings: Record<string, number>;
  peakMemoryMb: number;
}

export interface Pipeline {
  readonly info: PipelineInfo;
  /** Throws a RequestError for a request the model cannot serve; resolves defaults. */
  validate(req: GenerateRequest): GenerateRequest;
  generate(req: GenerateRequest): Promise<GenerateResult>;
  dispose(): void;
}

/** A bad request: callers map it to HTTP 400 / a CLI usage error. */
export class RequestError extends Error {
  readonly param: string | null;
  constructor(message: string, param: string | null = null) {
    super(message);
    this.name = 'RequestError';
    this.param = param;
  }
}
