// Errors raised by the hub client. `code` lets callers (CLI, server) react without parsing messages.
export type HubErrorCode =
  | 'invalid_repo_id' // the id or revision is malformed (rejected before any request)
  | 'unauthorized' // 401/403: private or gated repo, or a token without access
  | 'repo_not_found' // 404 on the repo
  | 'revision_not_found' // the repo exists but the branch, tag or commit does not
  | 'entry_not_found' // a listed file could not be fetched (404)
  | 'not_a_pipeline' // the repo has no model_index.json
  | 'offline' // offline mode and the model is not (completely) in the cache
  | 'network' // connection failures, timeouts, resets after the retries ran out
  | 'http' // any other unexpected HTTP status
  | 'integrity' // size or checksum mismatch, or a malformed answer from the hub
  | 'disk'; // not enough disk space

export class HubError extends Error {
  readonly code: HubErrorCode;
  readonly status: number | undefined;
  readonly url: string | undefined;
  /** Set when trying again may succeed although the status alone does not say so (an expired CDN link). */
  readonly retryable: boolean;

  constructor(
    code: HubErrorCode,
    message: string,
    opts: { status?: number; url?: string; cause?: unknown; retryable?: boolean } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'HubError';
    this.code = code;
    this.status = opts.status;
    this.url = opts.url;
    this.retryable = opts.retryable ?? false;
  }
}
