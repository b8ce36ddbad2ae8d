// The Hugging Face cache layout, exactly as huggingface_hub writes it (file_download.py, _tree_cache.py):
//   <cache>/models--{org}--{name}/blobs/<etag>              file contents (etag = LFS sha256 or git blob id)
//   <cache>/models--{org}--{name}/snapshots/<commit>/<path> relative symlinks to ../../blobs/<etag>
//   <cache>/models--{org}--{name}/refs/<revision>           the commit a branch or tag resolved to
//   <cache>/models--{org}--{name}/trees/<commit>.json        the file listing of that commit
// so that models downloaded by Python tools are reused here and ours are reused by them.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import type { RemoteFile } from './client.js';
import { isCommitHash, validateBlobName, validateRepoFilePath, type RepoId } from './names.js';

const CACHEDIR_TAG =
  'Signature: 8a477f597d28d172789f06886806bc55\n' +
  '# This file is a cache directory tag created by huggingface_hub.\n' +
  '# For information about cache directory tags, see:\n' +
  '#\thttps://bford.info/cachedir/\n';

export class RepoCache {
  readonly root: string;
  readonly cacheDir: string;

  constructor(cacheDir: string, repo: RepoId) {
    this.cacheDir = cacheDir;
    this.root = join(cacheDir, `models--${repo.org}--${repo.name}`);
  }

  blobPath(etag: string): string {
    return join(this.root, 'blobs', etag);
  }

  snapshotDir(commit: string): string {
    return join(this.root, 'snapshots', commit);
  }

  snapshotFile(commit: string, path: string): string {
    return join(this.snapshotDir(commit), ...validateRepoFilePath(path).split('/'));
  }

  /** The commit for a revision without network: the revision itself if it is a full hash, else refs/<revision>. */
  async readRef(revision: string): Promise<string | null> {
    if (isCommitHash(revision)) return revision;
    try {
      const commit = (await fsp.readFile(join(this.root, 'refs', ...revision.split('/')), 'utf8')).trim();
      return isCommitHash(commit) ? commit : null;
    } catch {
      return null;
    }
  }

  /** refs/<revision> = commit, written atomically; nothing is written when the revision is the commit itself. */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit) return;
    const path = join(this.root, 'refs', ...revision.split('/'));
    await writeAtomic(path, commit);
  }

  /** The file listing of a commit cached by us or by huggingface_hub, or null. */
  async readTree(commit: string): Promise<RemoteFile[] | null> {
    let data: { format_version?: unknown; files?: Record<string, Record<string, unknown>> };
    try {
      data = JSON.parse(await fsp.readFile(join(this.root, 'trees', `${commit}.json`), 'utf8'));
    } catch {
      return null;
    }
    if (data.format_version !== 1 || !data.files || typeof data.files !== 'object') return null;
    try {
      return Object.entries(data.files).map(([path, info]) => {
        const f: RemoteFile = {
          path: validateRepoFilePath(path),
          size: Number(info.size),
          blobId: validateBlobName(String(info.blob_id), path),
        };
        if (typeof info.lfs_sha256 === 'string')
          f.lfs = { sha256: validateBlobName(info.lfs_sha256, path), size: Number(info.lfs_size), pointerSize: 0 };
        if (typeof info.xet_hash === 'string') f.xetHash = info.xet_hash;
        if (!Number.isSafeInteger(f.size) || (f.lfs && !Number.isSafeInteger(f.lfs.size))) throw new Error('bad size');
        return f;
      });
    } catch {
      return null; // a damaged listing is ignored and fetched again, as huggingface_hub does
    }
  }

  /** Write trees/<commit>.json in huggingface_hub's format (format_version 1, sorted keys, indent 1). */
  async writeTree(commit: string, files: RemoteFile[]): Promise<void> {
    const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const out: Record<string, Record<string, unknown>> = {};
    for (const f of sorted) {
      // Python's tree cache stores `size` as the tree API's size, which for LFS files is the real size.
      const info: Record<string, unknown> = { size: f.size, blob_id: f.blobId };
      if (f.lfs) {
        info.lfs_sha256 = f.lfs.sha256;
        info.lfs_size = f.lfs.size;
      }
      if (f.xetHash && /^[0-9a-f]{64}$/.test(f.xetHash)) info.xet_hash = f.xetHash;
      out[f.path] = info;
    }
    await writeAtomic(join(this.root, 'trees', `${commit}.json`), JSON.stringify({ format_version: 1, files: out }, null, 1));
  }

  /** Create the folders huggingface_hub expects (its cache scanner rejects a repo folder without snapshots/). */
  async prepare(): Promise<void> {
    await fsp.mkdir(join(this.root, 'blobs'), { recursive: true });
    await fsp.mkdir(join(this.root, 'snapshots'), { recursive: true });
    const tag = join(this.cacheDir, 'CACHEDIR.TAG');
    await fsp.writeFile(tag, CACHEDIR_TAG, { flag: 'wx' }).catch(() => undefined);
  }

  /** snapshots/<commit>/<path> -> relative symlink to blobs/<etag> (a copy where symlinks are not allowed). */
  async link(commit: string, path: string, etag: string): Promise<void> {
    const pointer = this.snapshotFile(commit, path);
    const blob = this.blobPath(etag);
    await fsp.mkdir(dirname(pointer), { recursive: true });
    const target = relative(dirname(pointer), blob);
    try {
      if ((await fsp.readlink(pointer)) === target) return;
    } catch {
      /* absent or not a link */
    }
    await fsp.rm(pointer, { force: true });
    try {
      await fsp.symlink(target, pointer);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EPERM' && code !== 'EACCES' && code !== 'ENOTSUP') throw err;
      await fsp.copyFile(blob, pointer);
    }
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await fsp.stat(path); // follows symlinks: a dangling snapshot link counts as missing
    return true;
  } catch {
    return false;
  }
}

export async function writeAtomic(path: string, text: string): Promise<void> {
  await fsp.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  await fsp.writeFile(tmp, text);
  await fsp.rename(tmp, path);
}
