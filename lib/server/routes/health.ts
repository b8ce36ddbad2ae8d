// GET /health (worker up, model loaded) and GET /health_generate (a real 1-step generation on the worker).
import type { FastifyPluginAsync } from 'fastify';

import { JobFailedError } from '../../runtime/runtime.js';
import { ApiError } from '../errors.js';

const unavailable = (message: string) => new ApiError(503, message, 'server_error', null, 'worker_unavailable');

export const healthRoutes: FastifyPluginAsync = async (app) => {
  app.get('/health', async () => {
    const rt = app.runtime;
    if (rt.shuttingDown) throw unavailable('the server is shutting down');
    if (!rt.ready) throw unavailable('no worker is ready (the model is loading or the worker is restarting)');
    return { status: 'ok' };
  });

  app.get('/health_generate', async () => {
    const rt = app.runtime;
    if (!rt.ready) throw unavailable('no worker is ready (the model is loading or the worker is restarting)');
    try {
      const { outcome } = await rt.probe().result;
      return { status: 'ok', inference_time_s: outcome.inferenceTimeS };
    } catch (err) {
      const reason = err instanceof JobFailedError ? err.error.message : (err as Error).message;
      throw unavailable(`the health generation failed: ${reason}`);
    }
  });
};
