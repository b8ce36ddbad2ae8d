// Models from the Hugging Face hub, in the cache layout huggingface_hub uses.
export { HubError, type HubErrorCode } from './errors.js';
export { parseRepoId, repoIdProblem, type RepoId } from './names.js';
export { hfHome, hubCacheDir, hubToken, resolveSettings, type HubOptions, type HubSettings } from './settings.js';
export { selectPipelineFiles, pipelineComponents } from './select.js';
export {
  downloadModel,
  resolveModelPath,
  type DownloadProgress,
  type DownloadResult,
  type ModelDownloadOptions,
} from './snapshot.js';
