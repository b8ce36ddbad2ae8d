// Reference images of a request: uploaded files, data: URLs, and (with --allow-url-fetch) http(s) URLs,
// decoded to RGB with the upload limits. Failures are 400s (413 for oversized data) naming the field.
import { decodeImage } from '../encode/image.js';
import type { RgbImage } from '../pipelines/types.js';
import { ApiError, badRequest } from './errors.js';

export interface InputLimits {
  allowUrlFetch: boolean;
  maxBytes: number;
  maxPixels: number;
}

const tooLarge = (what: string, max: number) =>
  new ApiError(413, `${what} is larger than the ${max}-byte limit`, 'invalid_request_error', null, 'payload_too_large');

function decodeDataUrl(url: string, param: string, maxBytes: number): Buffer {
  const m = /^data:([\w/+.-]*)(;[\w=.-]+)*?(;base64)?,(.*)$/s.exec(url);
  if (!m) throw badRequest(`${param}: malformed data: URL`, param);
  const mime = m[1] ?? '';
  if (mime && !mime.startsWith('image/')) throw badRequest(`${param}: data: URL has media type '${mime}', expected an image`, param);
  const payload = m[4] ?? '';
  if (!m[3]) return Buffer.from(decodeURIComponent(payload), 'latin1');
  if (payload.length > Math.ceil((maxBytes * 4) / 3) + 4) throw tooLarge(param, maxBytes);
  const clean = payload.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(clean)) throw badRequest(`${param}: data: URL is not valid base64`, param);
  return Buffer.from(clean, 'base64');
}

async function fetchImage(url: string, param: string, maxBytes: number): Promise<Buffer> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'follow', signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw badRequest(`${param}: could not fetch ${url} (${(err as Error).message})`, param);
  }
  if (!res.ok) throw badRequest(`${param}: fetching ${url} returned HTTP ${res.status}`, param);
  const declared = Number(res.headers.get('content-length') ?? NaN);
  if (declared > maxBytes) throw tooLarge(`${param} (${url})`, maxBytes);
  const chunks: Buffer[] = [];
  let total = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      total += (chunk as Uint8Array).length;
      if (total > maxBytes) throw tooLarge(`${param} (${url})`, maxBytes);
      chunks.push(Buffer.from(chunk as Uint8Array));
    }
  }
  return Buffer.concat(chunks);
}

/** Bytes of an image given by URL: data: always, http(s) only when fetching is allowed. */
export async function imageBytesFromUrl(url: string, param: string, limits: InputLimits): Promise<Buffer> {
  if (url.startsWith('data:')) return decodeDataUrl(url, param, limits.maxBytes);
  if (/^https?:\/\//i.test(url)) {
    if (!limits.allowUrlFetch) {
      throw badRequest(
        `${param}: fetching http(s) URLs is disabled on this server (start it with --allow-url-fetch), send the image as a file or a data: URL`,
        param,
        'url_fetch_disabled',
      );
    }
    return fetchImage(url, param, limits.maxBytes);
  }
  throw badRequest(`${param}: unsupported image URL (expected http(s):// or data:image/...;base64,...)`, param);
}

export async function decodeInput(bytes: Buffer, param: string, limits: InputLimits): Promise<RgbImage> {
  if (bytes.length > limits.maxBytes) throw tooLarge(param, limits.maxBytes);
  return decodeImage(bytes, { maxPixels: limits.maxPixels, minSide: 16, param });
}
