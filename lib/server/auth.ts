// Optional API key: `Authorization: Bearer <key>` on every route but /health, compared in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';

import type { FastifyInstance } from 'fastify';

import { ApiError } from './errors.js';

const OPEN_ROUTES = new Set(['/health']);

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Constant-time comparison (hashing first makes the lengths equal, so length leaks nothing either). */
export function keysMatch(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

export function installAuth(app: FastifyInstance, apiKey: string | null, corsEnabled: boolean): void {
  if (!apiKey) return;
  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?')[0] as string;
    if (OPEN_ROUTES.has(path)) return;
    // CORS preflights never carry credentials; @fastify/cors answers them.
    if (corsEnabled && request.method === 'OPTIONS') return;
    const header = request.headers.authorization;
    if (!header) {
      throw new ApiError(
        401,
        "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'.",
        'invalid_request_error',
        null,
        'missing_api_key',
      );
    }
    const m = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!m || !keysMatch(m[1] as string, apiKey)) {
      throw new ApiError(401, 'Incorrect API key provided.', 'invalid_request_error', null, 'invalid_api_key');
    }
  });
}
