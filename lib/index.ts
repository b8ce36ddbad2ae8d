// node-diffusion's programmatic API.
export * as engine from './engine/index.js';
export * as parallel from './parallel/index.js';
export * from './pipelines/types.js';
export { loadPipeline, registerPipeline, registerDemo, type LoadPipelineOptions, type PipelineLoadContext } from './pipelines/load.js';
export { createServer } from './server/app.js';
export { decodeImage, encodeImage, type ImageFormat } from './encode/image.js';
export type { ServerOptions } from './server/options.js';
export { downloadModel, resolveModelPath, HubError, type DownloadProgress, type DownloadResult, type ModelDownloadOptions } from './io/hub/index.js';
export { LoraManager, pipelineLoraTargets, weightsChecksum, type LoraListing, type LoraManagerOptions, type LoraTargetModel } from './lora/manager.js';
export { LoraError, type SetLoraArgs } from './lora/request.js';
