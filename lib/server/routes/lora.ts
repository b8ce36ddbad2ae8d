// LoRA management (upstream names and shapes): POST /v1/set_lora, /v1/merge_lora_weights,
// /v1/unmerge_lora_weights, GET /v1/list_loras, and POST /get_weights_checksum. The work happens in the
// worker (runtime.control): operations that change weights take their turn in the job order, so no job
// ever runs on weights that change under it; listing and checksums are answered at once.
//
// Bodies are JSON; an empty body means every default (the upstream examples post merge/unmerge with
// none) and JSON sent without a JSON content type (`curl -d`) is read as JSON too.
import type { FastifyPluginAsync } from 'fastify';
import { z } from 'zod';

import { checkMergeArgs, LoraError, planSetLora, type SetLoraArgs } from '../../lora/request.js';
import { JobFailedError } from '../../runtime/runtime.js';
import { ApiError, badRequest } from '../errors.js';

const name = z.string().min(1).max(256);
const path = z.string().min(1).max(4096);
const strength = z.number().finite();

export const setLoraSchema = z.strictObject({
  lora_nickname: z.union([name, z.array(name).min(1).max(64)]),
  lora_path: z.union([path, z.array(path.nullable()).min(1).max(64)]).nullable().optional(),
  target: z.union([z.string(), z.array(z.string()).min(1).max(64)]).optional(),
  strength: z.union([strength, z.array(strength).min(1).max(64)]).optional(),
});

export const mergeLoraSchema = z.strictObject({ target: z.string().optional(), strength: strength.nullable().optional() });
export const unmergeLoraSchema = z.strictObject({ target: z.string().optional() });
export const checksumSchema = z.strictObject({ module_names: z.array(z.string().min(1)).max(64).nullable().optional() });

/** What the JSON parser of these routes gives for a body (undefined when empty). */
function bodyOf(body: unknown): unknown {
  return body === undefined || body === null ? {} : body;
}

/** Errors of one operation, worded like the upstream server ("Failed to set LoRA adapter: ..."). */
function failure(prefix: string, err: unknown): unknown {
  if (err instanceof LoraError) return badRequest(`${prefix}: ${err.message}`, null, 'invalid_lora');
  if (err instanceof JobFailedError) {
    const e = err.error;
    if (e.code === 'invalid_request') return badRequest(`${prefix}: ${e.message}`, null, 'invalid_lora');
    if (e.code === 'worker_crashed' || e.code === 'worker_unavailable') return new ApiError(503, `${prefix}: ${e.message}`, 'server_error', null, e.code);
    return new ApiError(500, `${prefix}: ${e.message}`, 'server_error', null, e.code);
  }
  return err;
}

export const loraRoutes: FastifyPluginAsync = async (app) => {
  // JSON whatever the content type says, and an empty body as no fields (this plugin's routes only).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: 1024 * 1024 }, (_req, body, done) => {
    const text = String(body).trim();
    if (text === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      done(badRequest(`The body is not valid JSON (${(err as Error).message})`, null, 'invalid_json'), undefined);
    }
  });

  /** Rejects targets the served model does not have before anything is queued. */
  const checkTargets = (targets: string[]) => {
    const have = app.runtime.info.loraTargets;
    if (have.length === 0) throw new LoraError(`Lora is not enabled: ${app.runtime.info.pipelineClass} has no module LoRA can target`);
    for (const t of targets)
      if (t !== 'all' && !have.includes(t)) throw new LoraError(`target '${t}' is not a module of this model (LoRA targets: ${have.join(', ')})`);
  };

  app.post('/v1/set_lora', async (request) => {
    const body = setLoraSchema.parse(bodyOf(request.body)) as SetLoraArgs;
    try {
      checkTargets(planSetLora(body).targets);
      return await app.runtime.control('lora.set', body, { exclusive: true });
    } catch (err) {
      throw failure('Failed to set LoRA adapter', err);
    }
  });

  app.post('/v1/merge_lora_weights', async (request) => {
    const body = mergeLoraSchema.parse(bodyOf(request.body));
    try {
      checkTargets([checkMergeArgs(body).target]);
      return await app.runtime.control('lora.merge', body, { exclusive: true });
    } catch (err) {
      throw failure('Failed to merge LoRA weights', err);
    }
  });

  app.post('/v1/unmerge_lora_weights', async (request) => {
    const body = unmergeLoraSchema.parse(bodyOf(request.body));
    try {
      checkTargets([checkMergeArgs(body).target]);
      return await app.runtime.control('lora.unmerge', body, { exclusive: true });
    } catch (err) {
      throw failure('Failed to unmerge LoRA weights', err);
    }
  });

  app.get('/v1/list_loras', async () => {
    try {
      return await app.runtime.control('lora.list', {}, { exclusive: false });
    } catch (err) {
      throw failure('Failed to list LoRA adapters', err);
    }
  });

  app.post('/get_weights_checksum', async (request) => {
    const body = checksumSchema.parse(bodyOf(request.body));
    try {
      return await app.runtime.control('weights.checksum', { module_names: body.module_names ?? null }, { exclusive: false });
    } catch (err) {
      throw failure('Failed to compute the weight checksums', err);
    }
  });
};
