// Request schemas, one per route; request types are derived from them. Multipart forms carry every value as
// a string, so form schemas accept numeric and boolean strings where JSON schemas require real numbers.
import { z } from 'zod';

export type BodyMode = 'json' | 'form';

export const LIMITS = {
  maxPromptChars: 32000,
  maxN: 10,
  minSide: 16,
  maxSide: 4096,
  maxSteps: 1000,
  maxFrames: 1025,
  maxSeconds: 120,
  maxFps: 120,
  maxGuidance: 100,
  maxSeed: Number.MAX_SAFE_INTEGER,
} as const;

const NUMERIC = /^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/;

/** In form mode a numeric string becomes a number before validation; anything else fails the number check. */
function num<T extends z.ZodType>(mode: BodyMode, schema: T) {
  return mode === 'json' ? schema : z.preprocess((v) => (typeof v === 'string' && NUMERIC.test(v) ? Number(v) : v), schema);
}

function bool(mode: BodyMode) {
  const b = z.boolean();
  return mode === 'json' ? b : z.preprocess((v) => (v === 'true' ? true : v === 'false' ? false : v), b);
}

/** `seconds` is a string in the OpenAI API ("4"), a number in the upstream server: both accepted. */
const seconds = z.preprocess(
  (v) => (typeof v === 'string' && NUMERIC.test(v) ? Number(v) : v),
  z.number().positive().max(LIMITS.maxSeconds),
);

const prompt = z.string().max(LIMITS.maxPromptChars).refine((s) => s.trim().length > 0, 'must not be empty');
const negativePrompt = z.string().max(LIMITS.maxPromptChars);

/** "WxH" with both sides multiples of 16 within bounds, or "auto" for the model default. */
export const sizeSchema = z.string().transform((s, ctx) => {
  const v = s.replace(/\s+/g, '').toLowerCase();
  if (v === 'auto') return null;
  const m = /^(\d{1,6})x(\d{1,6})$/.exec(v);
  if (!m) {
    ctx.addIssue({ code: 'custom', message: `must be "WIDTHxHEIGHT" (e.g. "832x480") or "auto", got "${s}"` });
    return z.NEVER;
  }
  const width = Number(m[1]);
  const height = Number(m[2]);
  for (const [name, side] of [['width', width], ['height', height]] as const) {
    if (side < LIMITS.minSide || side > LIMITS.maxSide) {
      ctx.addIssue({ code: 'custom', message: `${name} ${side} is outside ${LIMITS.minSide}..${LIMITS.maxSide}` });
      return z.NEVER;
    }
    if (side % 16 !== 0) {
      ctx.addIssue({ code: 'custom', message: `${name} ${side} is not a multiple of 16` });
      return z.NEVER;
    }
  }
  return { width, height };
});

/** Fields shared by image generation and image edits (the upstream server's extensions included). */
function imageFields(mode: BodyMode) {
  return {
    prompt,
    model: z.string().optional(),
    n: num(mode, z.number().int().min(1).max(LIMITS.maxN)).optional(),
    size: sizeSchema.optional(),
    response_format: z.enum(['b64_json', 'url']).optional(),
    output_format: z
      .enum(['png', 'jpeg', 'jpg', 'webp'])
      .transform((f) => (f === 'jpg' ? 'jpeg' : f))
      .optional(),
    output_compression: num(mode, z.number().int().min(0).max(100)).optional(),
    output_quality: z.enum(['maximum', 'high', 'medium', 'low', 'default']).optional(),
    background: z.enum(['transparent', 'opaque', 'auto']).optional(),
    seed: num(mode, z.number().int().min(0).max(LIMITS.maxSeed)).optional(),
    num_inference_steps: num(mode, z.number().int().min(1).max(LIMITS.maxSteps)).optional(),
    guidance_scale: num(mode, z.number().min(0).max(LIMITS.maxGuidance)).optional(),
    true_cfg_scale: num(mode, z.number().min(0).max(LIMITS.maxGuidance)).optional(),
    negative_prompt: negativePrompt.optional(),
    enable_teacache: bool(mode).optional(),
    stream: bool(mode).optional(),
    partial_images: num(mode, z.number().int().min(0).max(3)).optional(),
    // Accepted for OpenAI compatibility; they do not change what this server generates.
    user: z.string().max(256).optional(),
    quality: z.enum(['standard', 'hd', 'low', 'medium', 'high', 'auto']).optional(),
    style: z.enum(['vivid', 'natural']).optional(),
    moderation: z.enum(['low', 'auto']).optional(),
    generator_device: z.enum(['cuda', 'cpu']).optional(),
  };
}

/** POST /v1/images/generations (JSON). */
export const imageGenerationSchema = z.strictObject(imageFields('json'));
export type ImageGenerationRequest = z.infer<typeof imageGenerationSchema>;

/** POST /v1/images/edits (multipart text fields; files are handled separately). */
export const imageEditSchema = z.strictObject({
  ...imageFields('form'),
  url: z.array(z.string().min(1)).max(16).optional(),
  input_fidelity: z.enum(['high', 'low']).optional(),
  num_frames: num('form', z.number().int().min(1).max(1)).optional(),
});
export type ImageEditRequest = z.infer<typeof imageEditSchema>;

function videoFields(mode: BodyMode) {
  return {
    prompt,
    model: z.string().optional(),
    /** a URL (http(s) or data:) when sent as text; an uploaded file arrives separately */
    input_reference: z
      .union([z.string().min(1), z.strictObject({ image_url: z.string().min(1).optional(), file_id: z.string().optional() })])
      .optional(),
    reference_url: z.string().min(1).optional(),
    seconds: seconds.optional(),
    size: sizeSchema.optional(),
    fps: num(mode, z.number().int().min(1).max(LIMITS.maxFps)).optional(),
    num_frames: num(mode, z.number().int().min(1).max(LIMITS.maxFrames)).optional(),
    seed: num(mode, z.number().int().min(0).max(LIMITS.maxSeed)).optional(),
    negative_prompt: negativePrompt.optional(),
    num_inference_steps: num(mode, z.number().int().min(1).max(LIMITS.maxSteps)).optional(),
    guidance_scale: num(mode, z.number().min(0).max(LIMITS.maxGuidance)).optional(),
    guidance_scale_2: num(mode, z.number().min(0).max(LIMITS.maxGuidance)).optional(),
    true_cfg_scale: num(mode, z.number().min(0).max(LIMITS.maxGuidance)).optional(),
    enable_teacache: bool(mode).optional(),
    output_quality: z.enum(['maximum', 'high', 'medium', 'low', 'default']).optional(),
    output_compression: num(mode, z.number().int().min(0).max(100)).optional(),
    generator_device: z.enum(['cuda', 'cpu']).optional(),
    user: z.string().max(256).optional(),
  };
}

/** POST /v1/videos, JSON body (after `extra_body` keys are merged in) or multipart fields. */
export function videoCreateSchema(mode: BodyMode) {
  return z.strictObject(videoFields(mode));
}
export type VideoCreateRequest = z.infer<ReturnType<typeof videoCreateSchema>>;

/** POST /v1/videos/{id}/remix */
export const videoRemixSchema = z.strictObject({ prompt });
export type VideoRemixRequest = z.infer<typeof videoRemixSchema>;

/** GET /v1/videos */
export const videoListQuerySchema = z.strictObject({
  after: z.string().optional(),
  limit: num('form', z.number().int().min(1).max(100)).optional(),
  order: z.enum(['asc', 'desc']).optional(),
});
export type VideoListQuery = z.infer<typeof videoListQuerySchema>;

/** GET /v1/videos/{id}/content */
export const videoContentQuerySchema = z.strictObject({ variant: z.enum(['video', 'thumbnail']).optional() });
export type VideoContentQuery = z.infer<typeof videoContentQuerySchema>;

/** Path parameter of the id routes (format checked separately against the id pattern). */
export const idParamSchema = z.strictObject({ id: z.string() });
