// The /v1/videos family: create (JSON or multipart), list, retrieve, delete (cancel + remove files),
// content (video or thumbnail) and remix. Video jobs are asynchronous: create answers with the queued job.
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';

import type { RgbImage } from '../../pipelines/types.js';
import { isValidId } from '../../runtime/ids.js';
import type { JobRecord } from '../../runtime/store.js';
import { ApiError, badRequest, notFound } from '../errors.js';
import { sendFile } from '../files.js';
import { checkModel, checkTask, videoJobParams } from '../generation.js';
import { decodeInput, imageBytesFromUrl, type InputLimits } from '../inputs.js';
import { type FormValue, readForm, type UploadedFile } from '../multipart.js';
import { videoContentQuerySchema, videoCreateSchema, videoListQuerySchema, videoRemixSchema } from '../schemas.js';
import { videoObject } from '../views.js';

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `extra_body` (what some clients send literally) is merged into the top level, its keys winning. */
function mergeExtraBody(body: Record<string, unknown>): Record<string, unknown> {
  const { extra_body: extra, ...rest } = body;
  if (extra === undefined) return rest;
  let parsed: unknown = extra;
  if (typeof extra === 'string') {
    try {
      parsed = JSON.parse(extra);
    } catch {
      throw badRequest('extra_body is not valid JSON', 'extra_body');
    }
  }
  if (!isObject(parsed)) throw badRequest('extra_body must be a JSON object', 'extra_body');
  return { ...rest, ...parsed };
}

async function readBody(request: FastifyRequest, fileFields: ReadonlySet<string>) {
  if (request.isMultipart()) {
    const form = await readForm(request, { fileFields, arrayFields: new Set() });
    return { mode: 'form' as const, body: mergeExtraBody(form.fields as Record<string, FormValue>), files: form.files };
  }
  if (!isObject(request.body)) throw badRequest('expected a JSON object body or multipart/form-data', null, 'invalid_json');
  return { mode: 'json' as const, body: mergeExtraBody(request.body), files: [] as UploadedFile[] };
}

function findVideo(app: FastifyInstance, id: string): JobRecord {
  const job = isValidId(id, 'video') ? app.runtime.getJob(id) : null;
  if (!job || job.kind !== 'video') throw notFound(`No video with id '${id}'`, 'video_id');
  return job;
}

export const videoRoutes: FastifyPluginAsync = async (app) => {
  const limits = (): InputLimits => ({
    allowUrlFetch: app.serverOptions.allowUrlFetch,
    maxBytes: app.serverOptions.maxUploadBytes,
    maxPixels: app.serverOptions.maxInputPixels,
  });

  app.post('/v1/videos', async (request) => {
    const { mode, body, files } = await readBody(request, new Set(['input_reference']));
    const req = videoCreateSchema(mode).parse(body);
    const info = app.runtime.info;
    const ref = req.input_reference;
    if (typeof ref === 'object' && ref.file_id !== undefined) {
      throw badRequest('input_reference.file_id is not supported: upload the image or send input_reference.image_url', 'input_reference');
    }
    const urls: Array<[string, string]> = [];
    if (typeof ref === 'string') urls.push(['input_reference', ref]);
    else if (ref?.image_url) urls.push(['input_reference.image_url', ref.image_url]);
    if (req.reference_url) urls.push(['reference_url', req.reference_url]);
    const count = files.length + urls.length;
    checkModel(req.model, info);
    checkTask('videos', info, count);
    const inputs: RgbImage[] = [];
    for (const f of files) inputs.push(await decodeInput(f.data, 'input_reference', limits()));
    for (const [param, url] of urls) inputs.push(await decodeInput(await imageBytesFromUrl(url, param, limits()), param, limits()));
    const params = videoJobParams(req, info, inputs.length);
    const job = await app.runtime.submit({ kind: 'video', model: info.modelPath, params, inputs, requestId: request.id });
    return videoObject(app.runtime.getJob(job.id) as JobRecord);
  });

  app.get('/v1/videos', async (request) => {
    const q = videoListQuerySchema.parse(request.query);
    if (q.after !== undefined && !isValidId(q.after, 'video')) throw badRequest(`after: '${q.after}' is not a video id`, 'after');
    const page = app.runtime.store.listJobs('video', { after: q.after, limit: q.limit ?? 20, order: q.order ?? 'desc' });
    if (!page) throw notFound(`after: no video with id '${q.after}'`, 'after');
    const data = page.data.map(videoObject);
    return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore };
  });

  app.get('/v1/videos/:id', async (request) => videoObject(findVideo(app, (request.params as { id: string }).id)));

  app.delete('/v1/videos/:id', async (request) => {
    const job = findVideo(app, (request.params as { id: string }).id);
    await app.runtime.deleteJob(job.id);
    return { id: job.id, object: 'video.deleted', deleted: true };
  });

  app.get('/v1/videos/:id/content', async (request, reply) => {
    const job = findVideo(app, (request.params as { id: string }).id);
    const { variant = 'video' } = videoContentQuerySchema.parse(request.query);
    if (job.status === 'failed') {
      throw new ApiError(409, `Video '${job.id}' failed: ${job.error?.message ?? 'unknown error'}`, 'invalid_request_error', 'video_id', 'video_failed');
    }
    if (job.status !== 'completed') {
      throw new ApiError(409, `Video '${job.id}' is not ready (status ${job.status}, ${job.progress}% done)`, 'invalid_request_error', 'video_id', 'video_not_ready');
    }
    if (job.filesExpired) throw notFound(`The files of video '${job.id}' expired at ${job.expiresAt} and were removed`, 'video_id', 'content_expired');
    const layout = app.runtime.layout;
    return variant === 'thumbnail'
      ? sendFile(request, reply, layout.thumbnailFile(job.id), 'image/webp', `video '${job.id}'`)
      : sendFile(request, reply, layout.videoFile(job.id), 'video/mp4', `video '${job.id}'`);
  });

  app.post('/v1/videos/:id/remix', async (request) => {
    const source = findVideo(app, (request.params as { id: string }).id);
    const { body } = await readBody(request, new Set());
    const { prompt } = videoRemixSchema.parse(body);
    const info = app.runtime.info;
    if (source.model !== info.modelPath) {
      throw badRequest(`Video '${source.id}' was made by '${source.model}'; this server serves '${info.modelPath}'`, 'video_id');
    }
    const g = source.params.generation;
    if (g.inputImages > 0 && source.filesExpired) {
      throw badRequest(`The reference images of video '${source.id}' have expired`, 'video_id', 'content_expired');
    }
    const job = await app.runtime.submit({
      kind: 'video',
      model: source.model,
      params: { ...source.params, generation: { ...g, prompt } },
      inputsFrom: g.inputImages > 0 ? source.id : undefined,
      remixedFrom: source.id,
      requestId: request.id,
    });
    return videoObject(app.runtime.getJob(job.id) as JobRecord);
  });
};
