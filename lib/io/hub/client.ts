// HTTP side of the hub: authenticated requests with redirects followed by hand (the token is sent to the
// hub's own origin only, never to the CDN a file redirects to), bounded retries with backoff on transient
// failures, the error messages users see, and the two API calls we need (revision -> commit, file tree).
import { createRequire } from 'node:module';
import { HubError } from './errors.js';
import { validateBlobName, validateRepoFilePath, type RepoId } from './names.js';

export interface RetryPolicy {
  /** Attempts after the first one; the count restarts whenever a transfer makes progress. */
  maxRetries: number;
  /** First backoff delay; doubles per attempt up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxRetries: 5, baseDelayMs: 1000, maxDelayMs: 8000 };

/** A file of the repo at one commit, from the tree API. */
export interface RemoteFile {
  path: string;
  size: number;
  /** git blob id (sha1 of "blob <size>\0<content>" for regular files; of the pointer file for LFS files). */
  blobId: string;
  /** Present for LFS files: sha256 and size of the real content. */
  lfs?: { sha256: string; size: number; pointerSize: number };
  xetHash?: string;
}

/** The name of the file's blob in the cache: huggingface_hub's etag (LFS sha256, else the git blob id). */
export function blobName(f: RemoteFile): string {
  return f.lfs ? f.lfs.sha256 : f.blobId;
}

const pkgVersion = (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;
const USER_AGENT = `node-diffusion/${pkgVersion}; node/${process.versions.node}`;
const MAX_REDIRECTS = 10;

export interface RequestContext {
  repo: RepoId;
  revision: string;
  /** What the URL designates, for error messages. */
  what: 'api' | 'file';
  file?: string;
}

export class HubClient {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly retry: RetryPolicy;
  private readonly origin: string;

  constructor(endpoint: string, token: string | undefined, retry: RetryPolicy = DEFAULT_RETRY) {
    this.endpoint = endpoint;
    this.token = token;
    this.retry = retry;
    try {
      this.origin = new URL(endpoint).origin;
    } catch {
      throw new HubError('invalid_repo_id', `invalid hub endpoint '${endpoint}' (HF_ENDPOINT must be an http(s) URL)`);
    }
  }

  repoPage(repo: RepoId): string {
    return `${this.endpoint}/${repo.id}`;
  }

  resolveUrl(repo: RepoId, commit: string, path: string): string {
    return `${this.endpoint}/${repo.id}/resolve/${commit}/${path.split('/').map(encodeURIComponent).join('/')}`;
  }

  /**
   * One request with redirects followed by hand. Authorization goes only to the hub's origin. Network
   * failures become HubError('network') naming the URL; HTTP statuses are returned as they are.
   */
  async send(url: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response> {
    let current = url;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const h: Record<string, string> = { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', ...headers };
      if (this.token && new URL(current).origin === this.origin) h.authorization = `Bearer ${this.token}`;
      let res: Response;
      try {
        res = await fetch(current, { headers: h, redirect: 'manual', signal });
      } catch (err) {
        throw networkError(err, current);
      }
      if (res.status >= 300 && res.status < 400 && res.headers.has('location')) {
        await res.body?.cancel();
        current = new URL(res.headers.get('location')!, current).href;
        continue;
      }
      return res;
    }
    throw new HubError('http', `too many redirects (more than ${MAX_REDIRECTS}) starting at ${url}`, { url });
  }

  /** GET a JSON document with retries on transient failures; non-2xx statuses become HubErrors. */
  async getJson(url: string, ctx: RequestContext): Promise<{ body: unknown; res: Response }> {
    return withRetries(this.retry, async () => {
      const res = await this.send(url, { accept: 'application/json' });
      if (!res.ok) throw await this.statusError(res, url, ctx);
      const text = await readText(res, url);
      try {
        return { body: JSON.parse(text) as unknown, res };
      } catch {
        throw new HubError('integrity', `the hub answered ${url} with invalid JSON: ${text.slice(0, 200)}`, { url });
      }
    });
  }

  /** The commit a branch, tag or short hash points to (GET /api/models/{repo}/revision/{revision}). */
  async resolveCommit(repo: RepoId, revision: string): Promise<string> {
    const url = `${this.endpoint}/api/models/${repo.id}/revision/${encodeURIComponent(revision)}`;
    const { body } = await this.getJson(url, { repo, revision, what: 'api' });
    const sha = (body as { sha?: unknown } | null)?.sha;
    if (typeof sha !== 'string' || !/^[0-9a-f]{40}$/.test(sha))
      throw new HubError('integrity', `the hub's answer for ${url} has no commit sha`, { url });
    return sha;
  }

  /** Every file of the repo at a commit (GET /api/models/{repo}/tree/{commit}?recursive=true, paginated by Link). */
  async listFiles(repo: RepoId, commit: string): Promise<RemoteFile[]> {
    const files: RemoteFile[] = [];
    let url: string | null = `${this.endpoint}/api/models/${repo.id}/tree/${commit}?recursive=true&expand=false`;
    while (url) {
      const { body, res } = await this.getJson(url, { repo, revision: commit, what: 'api' });
      if (!Array.isArray(body)) throw new HubError('integrity', `the hub's tree listing at ${url} is not a list`, { url });
      for (const entry of body) {
        const f = parseTreeEntry(entry, url);
        if (f) files.push(f);
      }
      const next = nextPageUrl(res.headers.get('link'));
      url = next ? new URL(next, url).href : null;
    }
    return files;
  }

  /** The HubError for a non-2xx response, with the advice the user needs. Consumes the body. */
  async statusError(res: Response, url: string, ctx: RequestContext): Promise<HubError> {
    const status = res.status;
    const code = res.headers.get('x-error-code');
    const serverMessage = res.headers.get('x-error-message') ?? (await bodyMessage(res));
    const detail = serverMessage ? ` (${serverMessage})` : '';
    const page = this.repoPage(ctx.repo);
    const repo = ctx.repo.id;
    const answeredBy = res.url || url;
    if (new URL(answeredBy).origin !== this.origin)
      // The storage the hub redirected to refused: a fresh redirect from the hub usually fixes an expired link.
      return new HubError('http', `HTTP ${status} from ${answeredBy}, where the hub redirected ${url}${detail}`, {
        status,
        url,
        retryable: status === 401 || status === 403,
      });
    const tokenAdvice = this.token
      ? `The token in use (from --token, HF_TOKEN or the token file) does not give access to it: check that it is valid, has read access, and that its account accepted the model's terms on ${page}.`
      : `If it is gated or private, set HF_TOKEN to a Hugging Face access token (https://huggingface.co/settings/tokens) of an account that has access, and accept the model's terms on ${page}.`;
    if (code === 'RevisionNotFound')
      return new HubError('revision_not_found', `revision '${ctx.revision}' not found in ${repo} (${url})`, { status, url });
    if (code === 'EntryNotFound' || (status === 404 && ctx.what === 'file' && code !== 'RepoNotFound'))
      return new HubError('entry_not_found', `file '${ctx.file}' not found in ${repo} at ${ctx.revision} (${url})`, { status, url });
    if (code === 'GatedRepo')
      return new HubError('unauthorized', `${repo} is a gated model and access was refused (HTTP ${status})${detail}. ${tokenAdvice}`, { status, url });
    if (status === 401 || status === 403)
      return new HubError('unauthorized', `access to ${repo} was refused (HTTP ${status})${detail}: the repository is private, gated, or does not exist. ${tokenAdvice}`, { status, url });
    if (status === 404 || code === 'RepoNotFound')
      return new HubError('repo_not_found', `repository not found: ${repo} on ${this.endpoint} (${url}). Check the id for typos.`, { status, url });
    return new HubError('http', `HTTP ${status} from ${url}${detail}`, { status, url });
  }
}

function parseTreeEntry(entry: unknown, url: string): RemoteFile | null {
  const e = entry as Record<string, unknown> | null;
  if (!e || typeof e !== 'object') throw new HubError('integrity', `malformed entry in the tree listing at ${url}`, { url });
  if (e.type !== 'file') return null;
  const path = validateRepoFilePath(String(e.path ?? ''));
  if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0 || typeof e.oid !== 'string')
    throw new HubError('integrity', `the tree listing at ${url} gives no size or oid for '${path}'`, { url });
  const file: RemoteFile = { path, size: e.size, blobId: validateBlobName(e.oid, path) };
  const lfs = e.lfs as Record<string, unknown> | undefined | null;
  if (lfs) {
    if (typeof lfs.oid !== 'string' || typeof lfs.size !== 'number' || !Number.isSafeInteger(lfs.size) || lfs.size < 0)
      throw new HubError('integrity', `the tree listing at ${url} has malformed LFS data for '${path}'`, { url });
    if (!/^[0-9a-f]{64}$/.test(lfs.oid)) throw new HubError('integrity', `the LFS oid of '${path}' is not a sha256`, { url });
    file.lfs = { sha256: lfs.oid, size: lfs.size, pointerSize: typeof lfs.pointerSize === 'number' ? lfs.pointerSize : 0 };
    file.size = lfs.size;
  }
  if (typeof e.xetHash === 'string') file.xetHash = e.xetHash;
  return file;
}

/** The rel="next" URL of a Link header (GitHub-style pagination, as huggingface_hub's paginate). */
export function nextPageUrl(link: string | null): string | null {
  if (!link) return null;
  for (const part of link.split(',')) {
    const m = /<([^>]*)>\s*;(.*)/.exec(part.trim());
    if (m && /\brel\s*=\s*"?next"?/.test(m[2]!)) return m[1]!;
  }
  return null;
}

async function readText(res: Response, url: string): Promise<string> {
  try {
    return await res.text();
  } catch (err) {
    throw networkError(err, url);
  }
}

async function bodyMessage(res: Response): Promise<string> {
  let text: string;
  try {
    text = await res.text();
  } catch {
    return '';
  }
  try {
    const j = JSON.parse(text) as { error?: unknown };
    if (typeof j.error === 'string') return j.error;
  } catch {
    /* not JSON: use the text itself */
  }
  return text.trim().slice(0, 200);
}

export function networkError(err: unknown, url: string): HubError {
  if (err instanceof HubError) return err;
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  const reason = e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
  return new HubError('network', `network error for ${url}: ${reason}`, { url, cause: err });
}

export function isTransient(err: unknown): boolean {
  if (!(err instanceof HubError)) return false;
  if (err.code === 'network' || err.retryable) return true;
  const s = err.status;
  return err.code === 'http' && s !== undefined && (s >= 500 || s === 408 || s === 429);
}

export function backoffMs(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Run `fn`, retrying transient HubErrors up to policy.maxRetries times with exponential backoff. */
export async function withRetries<T>(policy: RetryPolicy, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTransient(err) || attempt > policy.maxRetries) throw err;
      await sleep(backoffMs(policy, attempt));
    }
  }
}
