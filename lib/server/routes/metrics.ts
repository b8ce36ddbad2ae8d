// GET /metrics: Prometheus text format (queue depth, jobs by status, step and stage latency, memory, HTTP latency).
import type { FastifyPluginAsync } from 'fastify';

export const metricsRoutes: FastifyPluginAsync = async (app) => {
  const { registry } = app.runtime.metrics;
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', registry.contentType);
    return registry.metrics();
  });
};
