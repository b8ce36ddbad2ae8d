// One file from the hub into blobs/<etag>: written to blobs/<etag>.incomplete, in parallel ranged chunks
// for large files (one stream when the server ignores Range), resumed after an interruption, size and
// checksum verified (LFS sha256, or the git blob sha1 of regular files) before it is renamed into place.
//
// Resume state: blobs/<etag>.incomplete.json lists the byte ranges of the .incomplete file that hold data
// (needed because parallel chunks leave holes). Without it, the .incomplete file's length is taken as the
// downloaded prefix, which is what huggingface_hub's own <etag>.incomplete files mean.
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import { backoffMs, isTransient, networkError, sleep, type HubClient, type RemoteFile, type RequestContext, type RetryPolicy } from './client.js';
import { writeAtomic } from './cache.js';
import { HubError } from './errors.js';

export interface TransferTuning {
  /** Files larger than this are fetched as parallel ranged requests of this many bytes. */
  chunkSize: number;
  /** HTTP transfers running at once, across all files. */
  connections: number;
  /** A transfer that receives no data for this long is aborted and retried. */
  idleTimeoutMs: number;
  retry: RetryPolicy;
}

/** A FIFO semaphore bounding the number of simultaneous transfers. */
export class Limiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly slots: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.slots) await new Promise<void>((r) => this.waiting.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

interface Segment {
  start: number;
  /** exclusive */
  end: number;
  /** bytes present from `start` */
  done: number;
}

interface Job {
  client: HubClient;
  file: RemoteFile;
  url: string;
  ctx: RequestContext;
  size: number;
  fh: fsp.FileHandle;
  segments: Segment[];
  tuning: TransferTuning;
  limiter: Limiter;
  abort: AbortController;
  onBytes: (delta: number) => void;
}

export interface BlobRequest {
  client: HubClient;
  file: RemoteFile;
  /** resolve URL of the file at the commit */
  url: string;
  ctx: RequestContext;
  blobPath: string;
  tuning: TransferTuning;
  limiter: Limiter;
  /** Bytes received (negative when received bytes had to be discarded). */
  onBytes: (delta: number) => void;
  /** Aborting it stops the transfer (the resumable state is kept) with TransferCancelled. */
  signal?: AbortSignal;
}

const inFlight = new Map<string, Promise<void>>();

/** Bytes of the blob already present in a resumable .incomplete file (0 when none). */
export async function resumableBytes(blobPath: string, size: number): Promise<number> {
  const ranges = await loadRanges(blobPath, size);
  return ranges.reduce((n, [s, e]) => n + (e - s), 0);
}

/** Download the file into blobPath unless it is already there. Concurrent calls for one blob share the work. */
export function fetchBlob(req: BlobRequest): Promise<void> {
  const running = inFlight.get(req.blobPath);
  if (running) return running;
  const p = downloadBlob(req).finally(() => inFlight.delete(req.blobPath));
  inFlight.set(req.blobPath, p);
  return p;
}

async function downloadBlob(req: BlobRequest): Promise<void> {
  const { blobPath, file } = req;
  const size = file.size;
  const incomplete = `${blobPath}.incomplete`;
  const statePath = `${incomplete}.json`;
  const ranges = await loadRanges(blobPath, size);
  const segments = planSegments(size, req.tuning.chunkSize, ranges);
  const fh = await fsp.open(incomplete, (await exists(incomplete)) ? 'r+' : 'w+');
  const length = (await fh.stat()).size;
  if (ranges.length === 0 || length > size) await fh.truncate(ranges.length === 0 ? 0 : size);
  const job: Job = { ...req, size, fh, segments, abort: new AbortController() };
  const stop = () => job.abort.abort();
  req.signal?.addEventListener('abort', stop, { once: true });
  if (req.signal?.aborted) stop();
  // The resume state is rewritten every 2 s while data arrives; writes are serialized so that none lands
  // after the final one (or after the state file was removed).
  let saving: Promise<void> = Promise.resolve();
  const save = () => (saving = saving.then(() => saveState(statePath, job)).catch(() => undefined));
  await save();
  const saver = setInterval(save, 2000);
  saver.unref();
  const finish = async () => {
    clearInterval(saver);
    req.signal?.removeEventListener('abort', stop);
    await saving;
    await fh.close();
  };
  try {
    await runSegments(job);
  } catch (err) {
    await finish();
    if (err instanceof HubError && err.code === 'integrity') await discard(incomplete, statePath);
    else await saveState(statePath, job);
    throw err;
  }
  await finish();
  await verify(incomplete, statePath, file, req.url);
  await fsp.rename(incomplete, blobPath);
  await fsp.rm(statePath, { force: true });
}

async function exists(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    () => true,
    () => false,
  );
}

async function discard(incomplete: string, statePath: string): Promise<void> {
  await fsp.rm(incomplete, { force: true });
  await fsp.rm(statePath, { force: true });
}

/** The byte ranges known to hold data: from the state file, else the .incomplete file's length as a prefix. */
async function loadRanges(blobPath: string, size: number): Promise<[number, number][]> {
  const incomplete = `${blobPath}.incomplete`;
  let length: number;
  try {
    length = (await fsp.stat(incomplete)).size;
  } catch {
    return [];
  }
  try {
    const state = JSON.parse(await fsp.readFile(`${incomplete}.json`, 'utf8')) as { size?: unknown; ranges?: unknown };
    if (state.size === size && Array.isArray(state.ranges)) {
      const ranges = state.ranges as unknown[];
      const ok = ranges.every(
        (r) => Array.isArray(r) && r.length === 2 && Number.isSafeInteger(r[0]) && Number.isSafeInteger(r[1]) && 0 <= r[0] && r[0] <= r[1] && r[1] <= Math.min(size, length),
      );
      if (ok) return ranges as [number, number][];
    }
  } catch {
    /* no state file: the .incomplete file is a prefix */
  }
  return length > 0 && length <= size ? [[0, length]] : [];
}

/** Split [0,size) into chunks and credit each with the data already present at its start. */
function planSegments(size: number, chunkSize: number, ranges: [number, number][]): Segment[] {
  const n = size > chunkSize ? Math.ceil(size / chunkSize) : 1;
  const segments: Segment[] = [];
  for (let i = 0; i < n; i++) {
    const start = n === 1 ? 0 : i * chunkSize;
    const end = n === 1 ? size : Math.min(size, start + chunkSize);
    let done = 0;
    for (const [s, e] of ranges) if (s <= start && e > start) done = Math.max(done, Math.min(e, end) - start);
    segments.push({ start, end, done });
  }
  return segments;
}

async function saveState(statePath: string, job: Job): Promise<void> {
  const ranges = job.segments.filter((s) => s.done > 0).map((s) => [s.start, s.start + s.done]);
  await writeAtomic(statePath, JSON.stringify({ size: job.size, ranges }));
}

/**
 * Run the unfinished segments. With several, the first is a probe: the others start only once its answer
 * shows that the server honours Range; a 200 instead turns the job into a single stream of the whole file.
 */
async function runSegments(job: Job): Promise<void> {
  const pending = job.segments.filter((s) => s.done < s.end - s.start);
  if (pending.length === 0) return;
  if (job.segments.length === 1) return runSegment(job, pending[0]!, () => undefined);
  let settleProbe!: (rangeHonoured: boolean) => void;
  const probe = new Promise<boolean>((r) => (settleProbe = r));
  const tasks = [runSegment(job, pending[0]!, settleProbe).finally(() => settleProbe(false))];
  for (const seg of pending.slice(1)) tasks.push(probe.then((ok) => (ok ? runSegment(job, seg, () => undefined) : undefined)));
  const results = await Promise.allSettled(tasks.map((t) => t.catch((err) => (job.abort.abort(), Promise.reject(err)))));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected' && !isAbort(r.reason));
  if (failed) throw failed.reason;
  const aborted = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (aborted) throw aborted.reason;
}

/** A transfer stopped because another part of the download failed; the failure itself is reported instead. */
export class TransferCancelled extends Error {}
const isAbort = (e: unknown) => e instanceof TransferCancelled;
const cancelled = () => new TransferCancelled('cancelled because another part of the download failed');

/** Fetch one segment, retrying transient failures from where the data stops. */
async function runSegment(job: Job, seg: Segment, onStatus: (rangeHonoured: boolean) => void): Promise<void> {
  let failures = 0;
  for (;;) {
    // After a fall-back to one stream, the job's only segment replaces this one.
    if (!job.segments.includes(seg)) seg = job.segments[0]!;
    if (seg.done >= seg.end - seg.start) return;
    if (job.abort.signal.aborted) throw cancelled();
    const attempt = { bytes: 0 };
    try {
      await job.limiter.run(() => transferOnce(job, seg, onStatus, attempt));
    } catch (err) {
      if (job.abort.signal.aborted) throw cancelled();
      if (!isTransient(err)) throw err;
      failures = attempt.bytes > 0 ? 1 : failures + 1; // progress resets the count, as huggingface_hub does
      if (failures > job.tuning.retry.maxRetries) {
        const last = err as HubError;
        throw new HubError(
          last.code,
          `${last.message} (gave up on ${job.ctx.file} after ${failures} failed attempts; run again to resume)`,
          { status: last.status, url: last.url ?? job.url, cause: err },
        );
      }
      await sleep(backoffMs(job.tuning.retry, failures));
    }
  }
}

const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;
const WRITE_BATCH = 4 << 20;

async function transferOnce(
  job: Job,
  seg: Segment,
  onStatus: (rangeHonoured: boolean) => void,
  attempt: { bytes: number },
): Promise<void> {
  const single = job.segments.length === 1;
  const from = seg.start + seg.done;
  const headers: Record<string, string> = {};
  if (!(single && from === 0)) headers.range = single ? `bytes=${from}-` : `bytes=${from}-${seg.end - 1}`;
  // One controller per request, aborted by the job (another part failed) or by the stall timer, which
  // restarts whenever data arrives.
  const request = new AbortController();
  const onJobAbort = () => request.abort(cancelled());
  job.abort.signal.addEventListener('abort', onJobAbort, { once: true });
  if (job.abort.signal.aborted) onJobAbort();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => request.abort(new Error(`no data for ${job.tuning.idleTimeoutMs / 1000}s`)), job.tuning.idleTimeoutMs);
  };
  arm();
  try {
    await exchange(job, seg, headers, request, arm, onStatus, attempt);
  } finally {
    clearTimeout(timer);
    job.abort.signal.removeEventListener('abort', onJobAbort);
  }
}

async function exchange(
  job: Job,
  seg: Segment,
  headers: Record<string, string>,
  request: AbortController,
  arm: () => void,
  onStatus: (rangeHonoured: boolean) => void,
  attempt: { bytes: number },
): Promise<void> {
  const from = seg.start + seg.done;
  const single = job.segments.length === 1;
  const res = await job.client.send(job.url, headers, request.signal);
  if (res.status === 416) {
    await res.body?.cancel();
    throw new HubError('integrity', `the server refused byte range ${from}- of ${job.ctx.file} (HTTP 416): its size differs from the ${job.size} bytes the hub listed`, { url: job.url, status: 416 });
  }
  if (!res.ok) throw await job.client.statusError(res, job.url, job.ctx);
  if (res.status === 206) {
    const m = CONTENT_RANGE.exec(res.headers.get('content-range') ?? '');
    const wantEnd = seg.end - 1;
    if (!m || Number(m[1]) !== from || Number(m[2]) !== wantEnd || (m[3] !== '*' && Number(m[3]) !== job.size)) {
      await res.body?.cancel();
      throw new HubError('integrity', `the server answered bytes ${from}-${wantEnd}/${job.size} of ${job.ctx.file} with Content-Range '${res.headers.get('content-range')}'`, { url: job.url });
    }
    onStatus(true);
  } else if (headers.range) {
    // The server ignored Range and sends the whole file: start over from byte 0 as one stream.
    if (!single && seg !== job.segments.find((s) => s.done < s.end - s.start)) {
      await res.body?.cancel();
      throw networkError(new Error('the server ignored the Range header for one chunk'), job.url);
    }
    const discarded = job.segments.reduce((n, s) => n + s.done, 0);
    job.segments.splice(0, job.segments.length, { start: 0, end: job.size, done: 0 });
    seg = job.segments[0]!;
    await job.fh.truncate(0);
    job.onBytes(-discarded);
    onStatus(false);
  } else {
    onStatus(false);
  }
  const length = Number(res.headers.get('content-length') ?? NaN);
  const expected = seg.end - seg.start - seg.done;
  if (Number.isFinite(length) && !res.headers.get('content-encoding') && length !== expected) {
    await res.body?.cancel();
    throw new HubError('integrity', `the server sent ${length} bytes for ${job.ctx.file} where ${expected} were expected (the hub lists ${job.size} bytes)`, { url: job.url });
  }
  await receive(job, seg, res, request, arm, attempt);
}

async function receive(
  job: Job,
  seg: Segment,
  res: Response,
  request: AbortController,
  arm: () => void,
  attempt: { bytes: number },
): Promise<void> {
  if (!res.body) throw networkError(new Error('empty response body'), job.url);
  const reader = res.body.getReader();
  // Cancelling the reader is what reliably ends a pending read() once the request is aborted.
  const onAbort = () => void reader.cancel().catch(() => undefined);
  request.signal.addEventListener('abort', onAbort, { once: true });
  if (request.signal.aborted) onAbort();
  const abortError = () => {
    const reason: unknown = request.signal.reason;
    return reason instanceof TransferCancelled ? reason : networkError(reason, job.url);
  };
  // Received bytes are written in batches of WRITE_BATCH (one positional writev), then counted as done.
  let batch: Uint8Array[] = [];
  let batchBytes = 0;
  const flush = async () => {
    if (batchBytes === 0) return;
    const [buffers, n] = [batch, batchBytes];
    batch = [];
    batchBytes = 0;
    await job.fh.writev(buffers, seg.start + seg.done);
    seg.done += n;
    attempt.bytes += n;
    job.onBytes(n);
  };
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        throw request.signal.aborted ? abortError() : networkError(err, job.url);
      }
      if (request.signal.aborted) throw abortError();
      if (chunk.done) break;
      arm();
      const bytes = chunk.value;
      if (bytes.length > seg.end - seg.start - seg.done - batchBytes)
        throw new HubError('integrity', `the server sent more than the ${job.size} bytes the hub lists for ${job.ctx.file}`, { url: job.url });
      batch.push(bytes);
      batchBytes += bytes.length;
      if (batchBytes >= WRITE_BATCH) await flush();
    }
  } finally {
    request.signal.removeEventListener('abort', onAbort);
    reader.releaseLock();
    await flush(); // what arrived before a failure is kept for the resume
  }
  if (seg.done < seg.end - seg.start) {
    const got = seg.start + seg.done;
    throw networkError(new Error(`connection closed at byte ${got} of ${job.size}`), job.url);
  }
}

/** Size and checksum of the finished .incomplete file; on mismatch both files are deleted. */
async function verify(incomplete: string, statePath: string, file: RemoteFile, url: string): Promise<void> {
  const actualSize = (await fsp.stat(incomplete)).size;
  const fail = async (what: string) => {
    await discard(incomplete, statePath);
    throw new HubError('integrity', `${file.path}: ${what}; the download was deleted, run again to fetch it anew (${url})`, { url });
  };
  if (actualSize !== file.size) await fail(`size ${actualSize} bytes does not match the ${file.size} bytes the hub lists`);
  const hash = file.lfs ? createHash('sha256') : createHash('sha1').update(`blob ${file.size}\0`);
  for await (const buf of createReadStream(incomplete, { highWaterMark: 4 << 20 })) hash.update(buf as Buffer);
  const got = hash.digest('hex');
  const want = file.lfs ? file.lfs.sha256 : file.blobId;
  if (got !== want) await fail(`${file.lfs ? 'sha256' : 'git blob sha1'} ${got} does not match the expected ${want}`);
}

