// Turning validated API requests into job parameters for the served model: task checks, defaults,
// sizes, frame counts, quality. Everything a request can get wrong is caught here, before anything is stored.
import { type ImageFormat, resolveQuality } from '../encode/image.js';
import type { PipelineInfo, RgbImage, TaskType } from '../pipelines/types.js';
import type { JobParams } from '../runtime/protocol.js';
import { badRequest, notFound } from './errors.js';
import { type ImageEditRequest, type ImageGenerationRequest, LIMITS, type VideoCreateRequest } from './schemas.js';

export const DEFAULT_SEED = 1024;

const VIDEO_TASKS: ReadonlySet<TaskType> = new Set(['T2V', 'I2V', 'TI2V']);
const IMAGE_TASKS: ReadonlySet<TaskType> = new Set(['T2I', 'I2I', 'TI2I']);
const REQUIRES_IMAGE: ReadonlySet<TaskType> = new Set(['I2V', 'I2I']);

const TASK_NAMES: Record<TaskType, string> = {
  T2V: 'text-to-video',
  I2V: 'image-to-video',
  TI2V: 'text-image-to-video',
  T2I: 'text-to-image',
  I2I: 'image-to-image',
  TI2I: 'text-image-to-image',
};

export function isVideoModel(info: PipelineInfo): boolean {
  return VIDEO_TASKS.has(info.taskType);
}

/** `model`, when given, must name the served model. */
export function checkModel(model: string | undefined, info: PipelineInfo): void {
  if (model !== undefined && model !== info.modelPath) {
    throw notFound(`The model '${model}' does not exist (this server serves '${info.modelPath}')`, 'model', 'model_not_found');
  }
}

export type Route = 'images.generations' | 'images.edits' | 'videos';

/** The served model's task decides which routes take requests, and whether images are needed. */
export function checkTask(route: Route, info: PipelineInfo, inputImages: number): void {
  const task = info.taskType;
  const described = `'${info.modelPath}' is a ${TASK_NAMES[task]} model (${task})`;
  if (route === 'videos' && !VIDEO_TASKS.has(task)) {
    throw badRequest(`${described}; use POST /v1/images/generations`, 'model', 'unsupported_task');
  }
  if (route !== 'videos' && !IMAGE_TASKS.has(task)) {
    throw badRequest(`${described}; it makes videos, use POST /v1/videos`, 'model', 'unsupported_task');
  }
  if (inputImages > 0 && info.maxInputImages === 0) {
    const param = route === 'videos' ? 'input_reference' : 'image';
    const message =
      route === 'videos'
        ? `input_reference is not supported for ${task} models.`
        : `${described} and takes no input images; use POST /v1/images/generations`;
    throw badRequest(message, param, 'unsupported_input');
  }
  if (inputImages > info.maxInputImages) {
    throw badRequest(`${info.modelPath} accepts at most ${info.maxInputImages} input image(s), got ${inputImages}`, 'image');
  }
  if (inputImages === 0 && REQUIRES_IMAGE.has(task)) {
    throw badRequest(
      route === 'videos'
        ? 'input_reference or reference_url is required for image-to-video generation'
        : `${described} and needs an input image; use POST /v1/images/edits`,
      route === 'videos' ? 'input_reference' : 'image',
      'missing_required_parameter',
    );
  }
}

function checkUnsupported(req: { enable_teacache?: boolean; true_cfg_scale?: number; guidance_scale_2?: number }, info: PipelineInfo) {
  if (req.enable_teacache) throw badRequest('enable_teacache: TeaCache is not implemented by this server', 'enable_teacache', 'unsupported_parameter');
  if (req.true_cfg_scale !== undefined) {
    throw badRequest(`true_cfg_scale is not supported by ${info.pipelineClass} (use guidance_scale)`, 'true_cfg_scale', 'unsupported_parameter');
  }
  if (req.guidance_scale_2 !== undefined) {
    throw badRequest(
      `guidance_scale_2 applies to two-expert models (Wan2.2 A14B); ${info.pipelineClass} has one transformer`,
      'guidance_scale_2',
      'unsupported_parameter',
    );
  }
}

/** Nearest frame count of the form 4k+1 (the Wan VAE's temporal compression), at least 1. */
export function roundFrames(n: number): number {
  return Math.max(1, Math.round((n - 1) / 4) * 4 + 1);
}

export interface ImageJobSpec {
  params: JobParams;
  responseFormat: 'b64_json' | 'url';
  stream: boolean;
}

export function imageJobParams(
  req: ImageGenerationRequest | ImageEditRequest,
  info: PipelineInfo,
  route: 'images.generations' | 'images.edits',
  inputs: RgbImage[],
): ImageJobSpec {
  checkModel(req.model, info);
  checkTask(route, info, inputs.length);
  checkUnsupported(req, info);
  if (req.background === 'transparent') {
    throw badRequest('background=transparent is not supported: the models generate opaque RGB images', 'background', 'unsupported_parameter');
  }
  const d = info.defaults;
  // An edit without `size` gets the pipeline's choice (its first reference image's prepared size).
  const size = req.size ?? (inputs.length > 0 ? null : { width: d.width, height: d.height });
  const format = (req.output_format ?? 'png') as ImageFormat;
  const stream = req.stream ?? false;
  if (req.partial_images !== undefined && req.partial_images > 0 && !stream) {
    throw badRequest('partial_images needs stream=true', 'partial_images');
  }
  return {
    params: {
      generation: {
        prompt: req.prompt,
        negativePrompt: req.negative_prompt,
        width: size?.width ?? null,
        height: size?.height ?? null,
        numFrames: 1,
        fps: d.fps,
        numInferenceSteps: req.num_inference_steps ?? d.numInferenceSteps,
        guidanceScale: req.guidance_scale ?? d.guidanceScale,
        seed: req.seed ?? DEFAULT_SEED,
        numOutputs: req.n ?? 1,
        inputImages: inputs.length,
      },
      output: {
        format,
        quality: resolveQuality({ outputCompression: req.output_compression, outputQuality: req.output_quality }, 'image'),
        partialImages: stream ? (req.partial_images ?? 0) : 0,
      },
    },
    responseFormat: req.response_format ?? 'b64_json',
    stream,
  };
}

export function videoJobParams(req: VideoCreateRequest, info: PipelineInfo, inputImages: number): JobParams {
  checkModel(req.model, info);
  checkTask('videos', info, inputImages);
  checkUnsupported(req, info);
  const d = info.defaults;
  const size = req.size ?? { width: d.width, height: d.height };
  const fps = req.fps ?? d.fps;
  let numFrames: number;
  if (req.num_frames !== undefined) numFrames = req.num_frames;
  else if (req.seconds !== undefined) numFrames = Math.round(req.seconds * fps);
  else numFrames = d.numFrames;
  numFrames = roundFrames(numFrames);
  if (numFrames > LIMITS.maxFrames) {
    throw badRequest(`${numFrames} frames (seconds x fps) is more than the limit of ${LIMITS.maxFrames}`, req.num_frames ? 'num_frames' : 'seconds');
  }
  return {
    generation: {
      prompt: req.prompt,
      negativePrompt: req.negative_prompt,
      width: size.width,
      height: size.height,
      numFrames,
      fps,
      numInferenceSteps: req.num_inference_steps ?? d.numInferenceSteps,
      guidanceScale: req.guidance_scale ?? d.guidanceScale,
      seed: req.seed ?? DEFAULT_SEED,
      numOutputs: 1,
      inputImages,
    },
    output: {
      format: 'mp4',
      quality: resolveQuality({ outputCompression: req.output_compression, outputQuality: req.output_quality }, 'video'),
      partialImages: 0,
    },
  };
}
