// A diffusers pipeline from the hub into the local cache: resolve the revision to a commit, list the files,
// fetch model_index.json, then the files its components need, in parallel; link them into
// snapshots/<commit>/ once all are verified, then record refs/<revision>.
import { promises as fsp } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { blobName, DEFAULT_RETRY, HubClient, type RemoteFile, type RetryPolicy } from './client.js';
import { exists, RepoCache } from './cache.js';
import { HubError } from './errors.js';
import { isCommitHash, parseRepoId, repoIdProblem, validateRevision, type RepoId } from './names.js';
import { MODEL_INDEX, pipelineComponents, selectPipelineFiles } from './select.js';
import { resolveSettings, downloadTimeoutMs, type HubOptions, type HubSettings } from './settings.js';
import { fetchBlob, Limiter, resumableBytes, TransferCancelled, type TransferTuning } from './transfer.js';

export interface DownloadProgress {
  repo: string;
  commit: string;
  /** Bytes present of the files this call fetches (bytes resumed from an earlier attempt count as present). */
  bytesDone: number;
  bytesTotal: number;
  filesDone: number;
  filesTotal: number;
  /** The file that last received data or completed. */
  file: string;
}

export interface ModelDownloadOptions extends HubOptions {
  onProgress?: (p: DownloadProgress) => void;
  /** Transfer tuning: chunk size, parallel connections, stall timeout, retries. */
  transfer?: Partial<Omit<TransferTuning, 'retry'>> & { retry?: Partial<RetryPolicy> };
}

export interface DownloadResult {
  /** snapshots/<commit> folder of the model */
  path: string;
  commit: string;
  /** files of the pipeline in the snapshot */
  files: number;
  /** files and bytes fetched from the network by this call */
  downloadedFiles: number;
  downloadedBytes: number;
}

const DEFAULT_CHUNK = 64 << 20;
const DEFAULT_CONNECTIONS = 8;

function tuningFrom(opts: ModelDownloadOptions): TransferTuning {
  const t = opts.transfer ?? {};
  const tuning = {
    chunkSize: t.chunkSize ?? DEFAULT_CHUNK,
    connections: t.connections ?? DEFAULT_CONNECTIONS,
    idleTimeoutMs: t.idleTimeoutMs ?? downloadTimeoutMs(),
    retry: { ...DEFAULT_RETRY, ...t.retry },
  };
  const positive = { chunkSize: tuning.chunkSize, connections: tuning.connections, idleTimeoutMs: tuning.idleTimeoutMs };
  for (const [k, v] of Object.entries(positive))
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`transfer.${k} must be a positive integer, got ${v}`);
  if (!Number.isSafeInteger(tuning.retry.maxRetries) || tuning.retry.maxRetries < 0)
    throw new RangeError(`transfer.retry.maxRetries must be a non-negative integer, got ${tuning.retry.maxRetries}`);
  return tuning;
}

/**
 * A local folder for `pathOrId`: an existing local path or a `demo:` id is returned unchanged; an `org/name`
 * repo id is looked up in the Hugging Face cache (no network when the snapshot there is complete) and
 * downloaded otherwise. Malformed ids are rejected before any request.
 */
export async function resolveModelPath(pathOrId: string, opts: ModelDownloadOptions = {}): Promise<string> {
  if (pathOrId.startsWith('demo:')) return pathOrId;
  if (await exists(pathOrId)) return pathOrId;
  const problem = repoIdProblem(pathOrId);
  if (problem)
    throw new HubError('invalid_repo_id', `model path '${pathOrId}' is not an existing local path, nor a Hugging Face repo id 'org/name' (${problem})`);
  const repo = parseRepoId(pathOrId);
  const settings = resolveSettings(opts);
  validateRevision(settings.revision);
  const cache = new RepoCache(resolvePath(settings.cacheDir), repo);
  const cached = await inspectCache(cache, settings.revision);
  if (cached.complete) return cached.dir;
  if (settings.offline) throw offlineError(repo, settings, cached);
  try {
    return (await downloadModel(repo.id, opts)).path;
  } catch (err) {
    if (err instanceof HubError && err.code === 'repo_not_found')
      throw new HubError(err.code, `${err.message} There is no local folder '${pathOrId}' either.`, { status: err.status, url: err.url, cause: err });
    throw err;
  }
}

interface CacheState {
  complete: boolean;
  dir: string;
  commit: string | null;
  missing: string[];
}

/**
 * Whether the cache holds a complete snapshot for the revision. With a cached file listing (trees/<commit>.json)
 * every file the pipeline needs must be present; without one (older huggingface_hub), every component folder.
 */
async function inspectCache(cache: RepoCache, revision: string): Promise<CacheState> {
  const commit = await cache.readRef(revision);
  if (!commit) return { complete: false, dir: '', commit: null, missing: [] };
  const dir = cache.snapshotDir(commit);
  const indexPath = cache.snapshotFile(commit, MODEL_INDEX);
  if (!(await exists(indexPath))) return { complete: false, dir, commit, missing: [MODEL_INDEX] };
  const modelIndex = await readModelIndex(indexPath);
  const tree = await cache.readTree(commit);
  const wanted = tree
    ? selectPipelineFiles(tree, modelIndex).map((f) => cache.snapshotFile(commit, f.path))
    : pipelineComponents(modelIndex).map((c) => cache.snapshotFile(commit, c));
  const present = await Promise.all(wanted.map(exists));
  const missing = wanted.filter((_, i) => !present[i]).map((p) => p.slice(dir.length + 1));
  return { complete: missing.length === 0, dir, commit, missing };
}

async function readModelIndex(path: string): Promise<unknown> {
  const text = await fsp.readFile(path, 'utf8');
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HubError('not_a_pipeline', `${path} is not valid JSON: ${(err as Error).message}`);
  }
}

function offlineError(repo: RepoId, s: HubSettings, cached: CacheState): HubError {
  const what = `${repo.id} (revision ${s.revision})`;
  const state =
    cached.missing.length > 0
      ? `the cached snapshot ${cached.dir} is incomplete (missing ${cached.missing.slice(0, 3).join(', ')}${cached.missing.length > 3 ? `, and ${cached.missing.length - 3} more` : ''})`
      : `it is not in the Hugging Face cache at ${s.cacheDir}`;
  return new HubError(
    'offline',
    `offline mode is on (HF_HUB_OFFLINE) and ${what} cannot be used: ${state}. Run 'node-diffusion download ${repo.id}' with network access first, or unset HF_HUB_OFFLINE.`,
  );
}

const running = new Map<string, Promise<DownloadResult>>();

/**
 * Bring the pipeline at `revision` into the cache, asking the hub for the revision's current commit (files
 * already cached are not fetched again). In offline mode the cached snapshot is returned if complete.
 */
export async function downloadModel(repoId: string, opts: ModelDownloadOptions = {}): Promise<DownloadResult> {
  const repo = parseRepoId(repoId);
  const settings = resolveSettings(opts);
  validateRevision(settings.revision);
  const key = [resolvePath(settings.cacheDir), repo.id, settings.revision, settings.endpoint].join('\0');
  const existing = running.get(key);
  if (existing) return existing;
  const p = download(repo, settings, opts).finally(() => running.delete(key));
  running.set(key, p);
  return p;
}

async function download(repo: RepoId, settings: HubSettings, opts: ModelDownloadOptions): Promise<DownloadResult> {
  const cache = new RepoCache(resolvePath(settings.cacheDir), repo);
  if (settings.offline) {
    const cached = await inspectCache(cache, settings.revision);
    if (!cached.complete) throw offlineError(repo, settings, cached);
    return { path: cached.dir, commit: cached.commit!, files: 0, downloadedFiles: 0, downloadedBytes: 0 };
  }
  const tuning = tuningFrom(opts);
  const client = new HubClient(settings.endpoint, settings.token, tuning.retry);
  const commit = isCommitHash(settings.revision) ? settings.revision : await client.resolveCommit(repo, settings.revision);
  const cachedTree = await cache.readTree(commit);
  const files = cachedTree ?? (await client.listFiles(repo, commit));
  const indexFile = files.find((f) => f.path === MODEL_INDEX);
  if (!indexFile)
    throw new HubError(
      'not_a_pipeline',
      `${repo.id} is not a diffusers pipeline repo: it has no ${MODEL_INDEX} at revision ${settings.revision} (single-file checkpoints are not supported)`,
    );
  await cache.prepare();
  if (!cachedTree) await cache.writeTree(commit, files);

  const limiter = new Limiter(tuning.connections);
  const abort = new AbortController();
  const fetchFile = (f: RemoteFile, onBytes: (n: number) => void) =>
    fetchBlob({
      client,
      file: f,
      url: client.resolveUrl(repo, commit, f.path),
      ctx: { repo, revision: commit, what: 'file', file: f.path },
      blobPath: cache.blobPath(blobName(f)),
      tuning,
      limiter,
      signal: abort.signal,
      onBytes,
    });

  let downloadedFiles = 0;
  let downloadedBytes = 0;
  if (!(await exists(cache.blobPath(blobName(indexFile))))) {
    await fetchFile(indexFile, (n) => (downloadedBytes += n));
    downloadedFiles++;
  }
  const modelIndex = await readModelIndex(cache.blobPath(blobName(indexFile)));
  const selected = selectPipelineFiles(files, modelIndex);

  // One transfer per distinct blob that is not cached yet.
  const toFetch = new Map<string, RemoteFile>();
  for (const f of selected) {
    const etag = blobName(f);
    if (!toFetch.has(etag) && !(await exists(cache.blobPath(etag)))) toFetch.set(etag, f);
  }
  const present = await Promise.all([...toFetch.values()].map((f) => resumableBytes(cache.blobPath(blobName(f)), f.size)));
  const bytesTotal = [...toFetch.values()].reduce((n, f) => n + f.size, 0);
  await checkDiskSpace(cache.root, bytesTotal - present.reduce((a, b) => a + b, 0));

  const progress: DownloadProgress = {
    repo: repo.id,
    commit,
    bytesDone: present.reduce((a, b) => a + b, 0),
    bytesTotal,
    filesDone: 0,
    filesTotal: toFetch.size,
    file: MODEL_INDEX,
  };
  opts.onProgress?.({ ...progress });
  const results = await Promise.allSettled(
    [...toFetch.values()].map(async (f) => {
      try {
        await fetchFile(f, (n) => {
          downloadedBytes += n;
          progress.bytesDone += n;
          progress.file = f.path;
          opts.onProgress?.({ ...progress });
        });
      } catch (err) {
        abort.abort(); // one failure ends the whole download; the others keep their resumable state
        throw err;
      }
      downloadedFiles++;
      progress.filesDone++;
      progress.file = f.path;
      opts.onProgress?.({ ...progress });
    }),
  );
  const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
  if (errors.length > 0) throw errors.find((e) => !(e instanceof TransferCancelled)) ?? errors[0];

  for (const f of selected) await cache.link(commit, f.path, blobName(f));
  await cache.writeRef(settings.revision, commit);
  return { path: cache.snapshotDir(commit), commit, files: selected.length, downloadedFiles, downloadedBytes };
}

async function checkDiskSpace(dir: string, needed: number): Promise<void> {
  if (needed <= 0) return;
  const st = await fsp.statfs(dir);
  const free = st.bavail * st.bsize;
  if (free < needed)
    throw new HubError(
      'disk',
      `not enough disk space in ${dir}: the download needs ${(needed / 1e9).toFixed(2)} GB, ${(free / 1e9).toFixed(2)} GB are free (set HF_HUB_CACHE or --cache-dir to use another disk)`,
    );
}
