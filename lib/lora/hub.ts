// A LoRA from a Hugging Face repo id: the repo's adapter file (the same choice as in a local folder:
// pytorch_lora_weights.safetensors, adapter_model.safetensors, lora.safetensors, else its only
// .safetensors file at the top level) brought into the shared huggingface_hub cache. A cached
// snapshot of the revision is used without network; offline mode never touches it.
import { promises as fsp } from 'node:fs';
import { resolve as resolvePath } from 'node:path';

import { blobName, DEFAULT_RETRY, HubClient, type RemoteFile } from '../io/hub/client.js';
import { RepoCache } from '../io/hub/cache.js';
import { HubError } from '../io/hub/errors.js';
import { isCommitHash, parseRepoId, validateRevision } from '../io/hub/names.js';
import { type HubOptions, downloadTimeoutMs, resolveSettings } from '../io/hub/settings.js';
import { fetchBlob, Limiter } from '../io/hub/transfer.js';
import { LoraError } from './request.js';
import { adapterFileIn, ADAPTER_FILE_NAMES } from './source.js';

/** The adapter file among a repo's files, or a LoraError naming what is there. */
function chooseAdapter(repoId: string, files: RemoteFile[]): RemoteFile {
  const top = files.filter((f) => !f.path.includes('/') && f.path.endsWith('.safetensors'));
  for (const name of ADAPTER_FILE_NAMES) {
    const hit = top.find((f) => f.path === name);
    if (hit) return hit;
  }
  if (top.length === 1) return top[0]!;
  if (top.length === 0) throw new LoraError(`the Hugging Face repo ${repoId} has no .safetensors file at its top level`);
  throw new LoraError(`the Hugging Face repo ${repoId} has ${top.length} .safetensors files (${top.slice(0, 4).map((f) => f.path).join(', ')}): download the one you want and give its path`);
}

const exists = (p: string) =>
  fsp.stat(p).then(
    () => true,
    () => false,
  );

/** The local file of a repo's LoRA adapter, downloaded into the hub cache when it is not there. */
export async function fetchLoraFromHub(repoId: string, opts: HubOptions = {}): Promise<string> {
  const repo = parseRepoId(repoId);
  const settings = resolveSettings(opts);
  validateRevision(settings.revision);
  const cache = new RepoCache(resolvePath(settings.cacheDir), repo);
  const cachedCommit = await cache.readRef(settings.revision);
  if (cachedCommit) {
    const dir = cache.snapshotDir(cachedCommit);
    if (await exists(dir)) {
      try {
        return await adapterFileIn(dir);
      } catch {
        // no usable file in the cached snapshot: ask the hub (unless offline)
      }
    }
  }
  if (settings.offline)
    throw new LoraError(`offline mode is on (HF_HUB_OFFLINE) and the LoRA repo ${repo.id} (revision ${settings.revision}) is not in the Hugging Face cache at ${settings.cacheDir}`);
  const client = new HubClient(settings.endpoint, settings.token, DEFAULT_RETRY);
  try {
    const commit = isCommitHash(settings.revision) ? settings.revision : await client.resolveCommit(repo, settings.revision);
    const files = (await cache.readTree(commit)) ?? (await client.listFiles(repo, commit));
    const file = chooseAdapter(repo.id, files);
    await cache.prepare();
    await fetchBlob({
      client,
      file,
      url: client.resolveUrl(repo, commit, file.path),
      ctx: { repo, revision: commit, what: 'file', file: file.path },
      blobPath: cache.blobPath(blobName(file)),
      tuning: { chunkSize: 64 << 20, connections: 4, idleTimeoutMs: downloadTimeoutMs(), retry: DEFAULT_RETRY },
      limiter: new Limiter(4),
      onBytes: () => {},
    });
    await cache.link(commit, file.path, blobName(file));
    await cache.writeRef(settings.revision, commit);
    return cache.snapshotFile(commit, file.path);
  } catch (err) {
    if (err instanceof HubError) throw new LoraError(`cannot download the LoRA ${repo.id}: ${err.message}`);
    throw err;
  }
}
