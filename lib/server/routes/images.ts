// POST /v1/images/generations, POST /v1/images/edits (multipart), GET /v1/images/{id}/content.
// Image requests wait for their job on the connection; stream=true sends server-sent events instead.
import { readFile } from 'node:fs/promises';

import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';

import { type ImageFormat, MIME_TYPES } from '../../encode/image.js';
import type { RgbImage } from '../../pipelines/types.js';
import type { JobResult } from '../../runtime/runtime.js';
import { badRequest, notFound, toApiError } from '../errors.js';
import { sendFile } from '../files.js';
import { checkModel, checkTask, type ImageJobSpec, imageJobParams } from '../generation.js';
import { decodeInput, imageBytesFromUrl, type InputLimits } from '../inputs.js';
import { readForm } from '../multipart.js';
import { imageEditSchema, imageGenerationSchema } from '../schemas.js';

type EventPrefix = 'image_generation' | 'image_edit';

function baseUrl(request: FastifyRequest): string {
  return `${request.protocol}://${request.host}`;
}

async function imagesResponse(app: FastifyInstance, request: FastifyRequest, spec: ImageJobSpec, result: JobResult) {
  const g = spec.params.generation;
  const data = await Promise.all(
    result.images.map(async (im) => {
      if (spec.responseFormat === 'url') return { url: `${baseUrl(request)}/v1/images/${im.id}/content`, revised_prompt: g.prompt };
      const bytes = await readFile(app.runtime.layout.imageFile(im.id, im.format));
      return { b64_json: bytes.toString('base64'), revised_prompt: g.prompt };
    }),
  );
  const first = result.images[0];
  return {
    created: Math.floor(Date.now() / 1000),
    data,
    background: 'opaque',
    output_format: spec.params.output.format,
    size: first ? `${first.width}x${first.height}` : `${g.width}x${g.height}`,
    id: result.record?.id,
    inference_time_s: result.outcome.inferenceTimeS,
    peak_memory_mb: result.outcome.peakMemoryMb,
    batch_size: result.outcome.batchSize,
  };
}

/** Queues the job; answers with the images (or streams events), and cancels it if the client goes away. */
async function runImageJob(
  app: FastifyInstance,
  request: FastifyRequest,
  reply: FastifyReply,
  spec: ImageJobSpec,
  inputs: RgbImage[],
  prefix: EventPrefix,
) {
  const rt = app.runtime;
  const job = await rt.submit({ kind: 'image', model: rt.info.modelPath, params: spec.params, inputs, requestId: request.id });
  let finished = false;
  reply.raw.on('close', () => {
    if (!finished && !reply.raw.writableFinished) {
      request.log.info({ jobId: job.id }, 'client disconnected; cancelling its image job');
      void rt.deleteJob(job.id);
    }
  });
  if (!spec.stream) {
    try {
      const result = await job.result;
      return await imagesResponse(app, request, spec, result);
    } finally {
      finished = true;
    }
  }

  const format = spec.params.output.format as ImageFormat;
  // The size as resolved once the job started (an edit without `size` learns it from the pipeline).
  const size = () => `${job.params.generation.width}x${job.params.generation.height}`;
  const createdAt = () => Math.floor(Date.now() / 1000);
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    ...(reply.getHeaders() as Record<string, string>),
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  // Clients see the stream open at once, not at the first event (which may be a whole generation away).
  raw.flushHeaders();
  const event = (name: string, data: object) => {
    // A client that went away has a destroyed socket: its job is being cancelled, nothing to write.
    if (!raw.writableEnded && !raw.destroyed) raw.write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  job.on('partial', (index, images) => {
    for (const bytes of images) {
      event(`${prefix}.partial_image`, {
        type: `${prefix}.partial_image`,
        b64_json: Buffer.from(bytes).toString('base64'),
        partial_image_index: index,
        background: 'opaque',
        created_at: createdAt(),
        output_format: format,
        size: size(),
      });
    }
  });
  try {
    const result = await job.result;
    for (const im of result.images) {
      const bytes = await readFile(rt.layout.imageFile(im.id, im.format));
      event(`${prefix}.completed`, {
        type: `${prefix}.completed`,
        b64_json: bytes.toString('base64'),
        background: 'opaque',
        created_at: createdAt(),
        output_format: format,
        size: `${im.width}x${im.height}`,
        id: im.id,
        url: `${baseUrl(request)}/v1/images/${im.id}/content`,
        inference_time_s: result.outcome.inferenceTimeS,
        peak_memory_mb: result.outcome.peakMemoryMb,
        batch_size: result.outcome.batchSize,
      });
    }
  } catch (err) {
    const api = toApiError(err);
    request.log.warn({ jobId: job.id, code: api.code, msg: api.message }, 'streamed image job failed');
    event('error', api.body());
  } finally {
    finished = true;
    raw.end();
  }
  return reply;
}

export const imageRoutes: FastifyPluginAsync = async (app) => {
  const limits = (): InputLimits => ({
    allowUrlFetch: app.serverOptions.allowUrlFetch,
    maxBytes: app.serverOptions.maxUploadBytes,
    maxPixels: app.serverOptions.maxInputPixels,
  });

  app.post('/v1/images/generations', async (request, reply) => {
    if (request.isMultipart() || typeof request.body !== 'object' || request.body === null || Array.isArray(request.body)) {
      throw badRequest('POST /v1/images/generations expects a JSON object body', null, 'invalid_json');
    }
    const body = imageGenerationSchema.parse(request.body);
    const spec = imageJobParams(body, app.runtime.info, 'images.generations', []);
    return runImageJob(app, request, reply, spec, [], 'image_generation');
  });

  app.post('/v1/images/edits', async (request, reply) => {
    if (!request.isMultipart()) {
      throw badRequest('POST /v1/images/edits expects multipart/form-data with image file(s) and fields', null, 'invalid_multipart');
    }
    const form = await readForm(request, { fileFields: new Set(['image', 'mask']), arrayFields: new Set(['url']) });
    const body = imageEditSchema.parse(form.fields);
    const info = app.runtime.info;
    if (form.files.some((f) => f.field === 'mask')) {
      throw badRequest(`mask is not supported by ${info.pipelineClass}: it edits whole images from the prompt`, 'mask', 'unsupported_parameter');
    }
    const files = form.files.filter((f) => f.field === 'image');
    const urls = body.url ?? [];
    if (files.length + urls.length === 0) throw badRequest("Field 'image' or 'url' is required", 'image', 'missing_required_parameter');
    checkModel(body.model, info);
    checkTask('images.edits', info, files.length + urls.length);
    const inputs: RgbImage[] = [];
    for (const [i, f] of files.entries()) inputs.push(await decodeInput(f.data, files.length > 1 ? `image[${i}]` : 'image', limits()));
    for (const [i, u] of urls.entries()) {
      const param = urls.length > 1 ? `url[${i}]` : 'url';
      inputs.push(await decodeInput(await imageBytesFromUrl(u, param, limits()), param, limits()));
    }
    const spec = imageJobParams(body, info, 'images.edits', inputs);
    return runImageJob(app, request, reply, spec, inputs, 'image_edit');
  });

  app.get('/v1/images/:id/content', async (request, reply) => {
    const { id } = request.params as { id: string };
    const image = app.runtime.getImage(id);
    if (!image) throw notFound(`No image with id '${id}'`, 'id');
    if (image.expired) throw notFound(`The image '${id}' expired at ${image.expiresAt} and its file was removed`, 'id', 'content_expired');
    return sendFile(request, reply, app.runtime.layout.imageFile(image.id, image.format), MIME_TYPES[image.format], `image '${id}'`);
  });
};
