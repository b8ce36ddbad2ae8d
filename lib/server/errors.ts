// Errors in the OpenAI shape {"error":{"message","type","param","code"}} with the status SPEC section 3 gives.
import type { FastifyError, FastifyInstance } from 'fastify';
import { ZodError } from 'zod';

import { RequestError } from '../pipelines/types.js';
import { JobFailedError, QueueFullError, UnavailableError } from '../runtime/runtime.js';

export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'rate_limit_error' | 'server_error';

export interface OpenAIErrorBody {
  error: { message: string; type: ErrorType; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): OpenAIErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = 'invalid_value') =>
  new ApiError(400, message, 'invalid_request_error', param, code);

export const notFound = (message: string, param: string | null = null, code = 'not_found') =>
  new ApiError(404, message, 'invalid_request_error', param, code);

function zodPath(path: ReadonlyArray<PropertyKey>): string | null {
  if (path.length === 0) return null;
  return path.map((p) => (typeof p === 'number' ? `[${p}]` : String(p))).join('.').replace(/\.\[/g, '[');
}

/** The first zod issue, phrased for an API user. */
export function fromZod(err: ZodError): ApiError {
  const issue = err.issues[0];
  if (!issue) return badRequest('invalid request');
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.join(', ');
    return badRequest(`Unrecognized request argument supplied: ${keys}`, issue.keys[0] ?? null, 'unknown_parameter');
  }
  const param = zodPath(issue.path);
  // zod reports an absent key as a type error on `undefined`
  if (issue.code === 'invalid_type' && / received undefined$/.test(issue.message)) {
    return badRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
  }
  return badRequest(param ? `Invalid value for '${param}': ${issue.message}` : issue.message, param);
}

/** Maps anything thrown by a route to an ApiError. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof ZodError) return fromZod(err);
  if (err instanceof RequestError) return badRequest(err.message, err.param);
  if (err instanceof QueueFullError) {
    return new ApiError(429, err.message, 'rate_limit_error', null, 'queue_full', { 'retry-after': String(err.retryAfterS) });
  }
  if (err instanceof UnavailableError) return new ApiError(503, err.message, 'server_error', null, 'unavailable');
  if (err instanceof JobFailedError) {
    const e = err.error;
    if (e.code === 'invalid_request') return badRequest(e.message, e.param ?? null);
    if (e.code === 'server_shutdown') return new ApiError(503, e.message, 'server_error', null, e.code);
    return new ApiError(500, e.message, 'server_error', null, e.code);
  }
  const fe = err as Partial<FastifyError> & { statusCode?: number };
  const status = fe.statusCode;
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'Request body is too large', 'invalid_request_error', null, 'payload_too_large');
    case 'FST_REQ_FILE_TOO_LARGE':
      return new ApiError(413, 'An uploaded file is too large', 'invalid_request_error', null, 'payload_too_large');
    case 'FST_PARTS_LIMIT':
    case 'FST_FILES_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return new ApiError(413, `Too many multipart parts (${fe.message})`, 'invalid_request_error', null, 'payload_too_large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, `Unsupported Content-Type (${fe.message})`, 'invalid_request_error', null, 'unsupported_media_type');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return badRequest('The JSON body is empty', null, 'invalid_json');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return badRequest(`The body is not valid JSON (${fe.message})`, null, 'invalid_json');
    case 'FST_PROTO_VIOLATION':
    case 'FST_INVALID_JSON_FIELD_ERROR':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return badRequest(`Malformed multipart body: ${fe.message}`, null, 'invalid_multipart');
  }
  if (err instanceof SyntaxError && status === 400) return badRequest(`The body is not valid JSON (${err.message})`, null, 'invalid_json');
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ApiError(status, fe.message ?? 'invalid request', 'invalid_request_error', null, fe.code ?? null);
  }
  // Busboy reports a malformed multipart stream with a plain Error.
  if (err instanceof Error && /multipart|boundary|Unexpected end of form/i.test(err.message)) {
    return badRequest(`Malformed multipart body: ${err.message}`, null, 'invalid_multipart');
  }
  return new ApiError(500, 'Internal server error', 'server_error', null, 'internal_error');
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const api = toApiError(err);
    if (api.status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ status: api.status, code: api.code, msg: api.message }, 'request rejected');
    void reply.code(api.status).headers(api.headers).send(api.body());
  });
  app.setNotFoundHandler((request, reply) => {
    const api = notFound(`Unknown route: ${request.method} ${request.url.split('?')[0]}`, null, 'unknown_route');
    void reply.code(404).send(api.body());
  });
}
