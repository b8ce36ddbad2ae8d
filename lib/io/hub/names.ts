// Validation of everything that ends up in a URL or a cache path: repo ids, revisions, file paths from the
// hub's listing and blob names. Rules follow huggingface_hub's validate_repo_id, restricted to `org/name`.
import { HubError } from './errors.js';

const REPO_PART = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?$/;
const COMMIT_HASH = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const REVISION_SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/;

export interface RepoId {
  org: string;
  name: string;
  /** `org/name` */
  id: string;
}

/** Why `s` is not a valid `org/name` repo id, or null when it is. */
export function repoIdProblem(s: string): string | null {
  if (s.length === 0) return 'it is empty';
  if (s.includes('\\')) return 'it contains a backslash';
  if (s.startsWith('/')) return 'it is an absolute path';
  if (/[\u0000-\u001f\u007f]/.test(s)) return 'it contains control characters';
  const parts = s.split('/');
  if (parts.length !== 2) return "it must have exactly two parts, 'org/name'";
  if (parts.some((p) => p.length === 0)) return 'it has an empty part';
  if (parts.some((p) => p === '.' || p === '..') || s.includes('..')) return "it contains '..'";
  if (s.includes('--')) return "it contains '--'";
  for (const p of parts) {
    if (p.length > 96) return `'${p}' is longer than 96 characters`;
    if (!REPO_PART.test(p))
      return `'${p}' may only use letters, digits, '-', '_' and '.', and must start and end with a letter, digit or '_'`;
  }
  if (s.endsWith('.git')) return "it ends with '.git'";
  return null;
}

export function parseRepoId(s: string): RepoId {
  const problem = repoIdProblem(s);
  if (problem) throw new HubError('invalid_repo_id', `invalid Hugging Face repo id '${s}': ${problem}`);
  const [org, name] = s.split('/') as [string, string];
  return { org, name, id: s };
}

export function isCommitHash(revision: string): boolean {
  return COMMIT_HASH.test(revision);
}

/** Branch, tag or commit. Slashes are allowed (`refs/pr/1`) because refs/<revision> mirrors them as folders. */
export function validateRevision(revision: string): string {
  const bad = (why: string) => new HubError('invalid_repo_id', `invalid revision '${revision}': ${why}`);
  if (revision.length === 0) throw bad('it is empty');
  if (revision.length > 255) throw bad('it is longer than 255 characters');
  for (const seg of revision.split('/')) {
    if (seg.length === 0) throw bad('it has an empty path segment');
    if (seg === '.' || seg === '..' || seg.includes('..')) throw bad("it contains '..'");
    if (!REVISION_SEGMENT.test(seg) || seg.endsWith('.lock'))
      throw bad("it may only use letters, digits, '/', '-', '_', '+' and '.'");
  }
  return revision;
}

/** A path from the hub's file listing, checked before it is joined to a local folder. */
export function validateRepoFilePath(path: string): string {
  const bad = (why: string) => new HubError('integrity', `the hub listed an unsafe file path '${path}': ${why}`);
  if (path.length === 0) throw bad('it is empty');
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) throw bad('it is absolute');
  if (path.includes('\\')) throw bad('it contains a backslash');
  if (/[\u0000-\u001f]/.test(path)) throw bad('it contains control characters');
  for (const seg of path.split('/')) {
    if (seg.length === 0 || seg === '.' || seg === '..') throw bad("it has an empty, '.' or '..' segment");
  }
  return path;
}

/** Blob names are git sha1s (regular files) or sha256s (LFS files); anything else is refused. */
export function validateBlobName(name: string, path: string): string {
  if (COMMIT_HASH.test(name) || SHA256.test(name)) return name;
  throw new HubError('integrity', `the hub listed '${path}' with a malformed object id '${name}'`);
}

export function isSha256(s: string): boolean {
  return SHA256.test(s);
}
