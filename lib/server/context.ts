// What route plugins find on the fastify instance.
import type { Runtime } from '../runtime/runtime.js';
import type { ResolvedServerOptions } from './options.js';

declare module 'fastify' {
  interface FastifyInstance {
    /** the job runtime (store, queue, worker) behind the routes */
    runtime: Runtime;
    serverOptions: ResolvedServerOptions;
    /** unix seconds when the server started (model cards' `created`) */
    startedAt: number;
  }
}
