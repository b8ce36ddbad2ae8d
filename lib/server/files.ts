// Sending a stored output file: Content-Type, Content-Length, and single byte ranges (video players seek).
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';

import type { FastifyReply, FastifyRequest } from 'fastify';

import { ApiError, notFound } from './errors.js';

export async function sendFile(request: FastifyRequest, reply: FastifyReply, path: string, mime: string, what: string) {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    throw notFound(`The file of ${what} is no longer available`, null, 'file_missing');
  }
  reply.header('content-type', mime).header('accept-ranges', 'bytes').header('cache-control', 'private, max-age=3600');
  const range = request.headers.range;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
    let start = m && m[1] !== '' ? Number(m[1]) : NaN;
    let end = m && m[2] !== '' ? Number(m[2]) : size - 1;
    if (m && m[1] === '' && m[2] !== '') {
      start = Math.max(0, size - Number(m[2]));
      end = size - 1;
    }
    if (!m || !(start >= 0) || start > end || start >= size) {
      throw new ApiError(416, `Range '${range}' is not satisfiable (size ${size})`, 'invalid_request_error', 'range', 'range_not_satisfiable', {
        'content-range': `bytes */${size}`,
      });
    }
    end = Math.min(end, size - 1);
    reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`).header('content-length', String(end - start + 1));
    return reply.send(createReadStream(path, { start, end }));
  }
  reply.header('content-length', String(size));
  return reply.send(createReadStream(path));
}
