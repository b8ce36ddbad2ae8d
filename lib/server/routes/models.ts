// GET /models (upstream shape), GET /v1/models and /v1/models/{id} (OpenAI list and card).
import type { FastifyPluginAsync } from 'fastify';

import { notFound } from '../errors.js';
import { modelCard, modelInfo } from '../views.js';

export const modelRoutes: FastifyPluginAsync = async (app) => {
  const numGpus = () => app.serverOptions.numGpus;

  app.get('/models', async () => modelInfo(app.runtime.info, numGpus()));

  app.get('/v1/models', async () => ({ object: 'list', data: [modelCard(app.runtime.info, numGpus(), app.startedAt)] }));

  // Hub ids contain a slash (org/name), so the id is the rest of the path.
  app.get('/v1/models/*', async (request) => {
    const id = (request.params as { '*': string })['*'];
    const info = app.runtime.info;
    if (id !== info.modelPath) throw notFound(`The model '${id}' does not exist`, 'model', 'model_not_found');
    return modelCard(info, numGpus(), app.startedAt);
  });
};
