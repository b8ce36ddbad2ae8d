// createServer: the fastify app of the OpenAI-compatible API over a job runtime with its worker process.
import { randomBytes } from 'node:crypto';

import cors from '@fastify/cors';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import pino from 'pino';

import { Runtime } from '../runtime/runtime.js';
import { installAuth } from './auth.js';
import './context.js';
import { installErrorHandlers } from './errors.js';
import { resolveServerOptions, type ServerOptions } from './options.js';
import { ROUTE_PLUGINS } from './routes/index.js';

const REQUEST_ID = /^[\w.:-]{1,64}$/;

/**
 * Starts the job runtime (opens the job database under outputPath, forks the worker, loads the model) and
 * returns the fastify instance with every route registered, not yet listening: call `listen({ host, port })`.
 * `close()` on the instance stops accepting work, lets the running job finish (or fails it after
 * shutdownTimeoutMs), stops the worker and closes the database.
 */
export async function createServer(options: ServerOptions): Promise<FastifyInstance> {
  const opts = resolveServerOptions(options);
  const logger = pino({ level: opts.logLevel, base: { pid: process.pid } }, opts.logStream ?? process.stdout);
  const runtime = await Runtime.open({
    outputPath: opts.outputPath,
    load: {
      modelPath: opts.modelPath,
      device: opts.device,
      componentPaths: opts.componentPaths,
      textEncoderCpuOffload: opts.textEncoderCpuOffload,
      warmup: opts.warmup,
      lora: opts.loraPath ? { path: opts.loraPath, nickname: opts.loraNickname, strength: opts.loraScale } : null,
      maxLoras: opts.maxLoras,
    },
    maxQueue: opts.maxQueue,
    maxBatchSize: opts.maxBatchSize,
    requeueOnRestart: opts.requeueOnRestart,
    retentionSeconds: opts.outputRetentionSeconds,
    shutdownTimeoutMs: opts.shutdownTimeoutMs,
    logger: logger.child({ component: 'runtime' }),
    workerEnv: opts.workerEnv,
    parallel: opts.parallel,
  });

  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // JSON bodies may carry a data: URL image (base64 is 4/3 of the bytes).
    bodyLimit: Math.ceil((opts.maxUploadBytes * 4) / 3) + 1024 * 1024,
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'reqId' }),
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : `req_${randomBytes(8).toString('hex')}`;
    },
    return503OnClosing: true,
    forceCloseConnections: 'idle',
  });
  app.decorate('runtime', runtime);
  app.decorate('serverOptions', opts);
  app.decorate('startedAt', Math.floor(Date.now() / 1000));

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    runtime.metrics.httpSeconds.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  // Before the HTTP server closes (it waits for requests in flight): stop taking jobs, give the running one
  // its shutdown time, answer waiting image requests. The database closes once no request is left.
  app.addHook('preClose', async () => {
    await runtime.stop();
  });
  app.addHook('onClose', async () => {
    await runtime.close();
  });

  installErrorHandlers(app);
  if (opts.cors) {
    await app.register(cors, { origin: opts.cors === true ? true : opts.cors, exposedHeaders: ['x-request-id', 'retry-after'] });
  }
  installAuth(app, opts.apiKey, opts.cors !== false);
  await app.register(multipart, {
    limits: { fileSize: opts.maxUploadBytes, files: 16, fields: 64, parts: 96, fieldSize: 256 * 1024, headerPairs: 100 },
    throwFileSizeLimit: true,
  });
  for (const plugin of ROUTE_PLUGINS) await app.register(plugin);
  await app.ready();
  return app;
}
