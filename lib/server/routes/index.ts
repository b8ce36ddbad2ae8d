// The route plugins of the API, registered in this order by createServer. A feature with routes of its own
// (e.g. LoRA management) adds its plugin to this list.
import type { FastifyPluginAsync } from 'fastify';

import { healthRoutes } from './health.js';
import { imageRoutes } from './images.js';
import { loraRoutes } from './lora.js';
import { metricsRoutes } from './metrics.js';
import { modelRoutes } from './models.js';
import { videoRoutes } from './videos.js';

export const ROUTE_PLUGINS: ReadonlyArray<FastifyPluginAsync> = [healthRoutes, modelRoutes, imageRoutes, videoRoutes, loraRoutes, metricsRoutes];
