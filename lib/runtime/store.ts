// The job store: jobs and image records in SQLite (WAL) under --output-path. Survives restarts.
import Database from 'better-sqlite3';

import { assertId } from './ids.js';
import type { JobError, JobKind, JobParams, JobStatus } from './protocol.js';

export const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('video', 'image')),
  status TEXT NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'failed')),
  progress INTEGER NOT NULL DEFAULT 0,
  model TEXT NOT NULL,
  prompt TEXT NOT NULL,
  params TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  completed_at INTEGER,
  expires_at INTEGER,
  files_expired INTEGER NOT NULL DEFAULT 0,
  remixed_from TEXT,
  error_code TEXT,
  error_message TEXT,
  inference_time_s REAL,
  peak_memory_mb REAL,
  batch_size INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_by_kind ON jobs (kind, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  format TEXT NOT NULL CHECK (format IN ('png', 'jpeg', 'webp')),
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  expired INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_by_job ON images (job_id);
`;

export interface JobRecord {
  seq: number;
  id: string;
  kind: JobKind;
  status: JobStatus;
  progress: number;
  model: string;
  prompt: string;
  params: JobParams;
  createdAt: number;
  startedAt: number | null;
  completedAt: number | null;
  expiresAt: number | null;
  filesExpired: boolean;
  remixedFrom: string | null;
  error: JobError | null;
  inferenceTimeS: number | null;
  peakMemoryMb: number | null;
  /** requests that ran in the same pipeline batch as this one (1: alone; null until completed) */
  batchSize: number | null;
}

export interface ImageRecord {
  id: string;
  jobId: string;
  index: number;
  format: 'png' | 'jpeg' | 'webp';
  width: number;
  height: number;
  bytes: number;
  createdAt: number;
  expiresAt: number | null;
  expired: boolean;
}

interface JobRow {
  seq: number;
  id: string;
  kind: JobKind;
  status: JobStatus;
  progress: number;
  model: string;
  prompt: string;
  params: string;
  created_at: number;
  started_at: number | null;
  completed_at: number | null;
  expires_at: number | null;
  files_expired: number;
  remixed_from: string | null;
  error_code: string | null;
  error_message: string | null;
  inference_time_s: number | null;
  peak_memory_mb: number | null;
  batch_size: number | null;
}

interface ImageRow {
  id: string;
  job_id: string;
  idx: number;
  format: 'png' | 'jpeg' | 'webp';
  width: number;
  height: number;
  bytes: number;
  created_at: number;
  expires_at: number | null;
  expired: number;
}

function toJob(r: JobRow): JobRecord {
  return {
    seq: r.seq,
    id: r.id,
    kind: r.kind,
    status: r.status,
    progress: r.progress,
    model: r.model,
    prompt: r.prompt,
    params: JSON.parse(r.params) as JobParams,
    createdAt: r.created_at,
    startedAt: r.started_at,
    completedAt: r.completed_at,
    expiresAt: r.expires_at,
    filesExpired: r.files_expired !== 0,
    remixedFrom: r.remixed_from,
    error: r.error_code ? { code: r.error_code, message: r.error_message ?? '' } : null,
    inferenceTimeS: r.inference_time_s,
    peakMemoryMb: r.peak_memory_mb,
    batchSize: r.batch_size,
  };
}

function toImage(r: ImageRow): ImageRecord {
  return {
    id: r.id,
    jobId: r.job_id,
    index: r.idx,
    format: r.format,
    width: r.width,
    height: r.height,
    bytes: r.bytes,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    expired: r.expired !== 0,
  };
}

export interface NewJob {
  id: string;
  kind: JobKind;
  model: string;
  prompt: string;
  params: JobParams;
  createdAt: number;
  remixedFrom?: string | null;
}

export interface ListOptions {
  after?: string;
  limit: number;
  order: 'asc' | 'desc';
}

export class JobStore {
  private readonly db: Database.Database;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.migrate();
  }

  private migrate(): void {
    this.db.exec(SCHEMA);
    const row = this.db.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string } | undefined;
    if (!row) {
      this.db.prepare(`INSERT INTO meta (key, value) VALUES ('schema_version', ?)`).run(String(SCHEMA_VERSION));
    } else if (Number(row.value) === 1) {
      // version 2 records the batch size of completed jobs; older jobs have none
      this.db.transaction(() => {
        this.db.exec(`ALTER TABLE jobs ADD COLUMN batch_size INTEGER`);
        this.db.prepare(`UPDATE meta SET value = ? WHERE key = 'schema_version'`).run(String(SCHEMA_VERSION));
      })();
    } else if (Number(row.value) !== SCHEMA_VERSION) {
      throw new Error(
        `job database schema version ${row.value} is not supported by this version (expects ${SCHEMA_VERSION}); use another --output-path`,
      );
    }
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  insertJob(job: NewJob): void {
    assertId(job.id);
    this.db
      .prepare(
        `INSERT INTO jobs (id, kind, status, progress, model, prompt, params, created_at, remixed_from)
         VALUES (?, ?, 'queued', 0, ?, ?, ?, ?, ?)`,
      )
      .run(job.id, job.kind, job.model, job.prompt, JSON.stringify(job.params), job.createdAt, job.remixedFrom ?? null);
  }

  getJob(id: string): JobRecord | null {
    const row = this.db.prepare(`SELECT * FROM jobs WHERE id = ?`).get(id) as JobRow | undefined;
    return row ? toJob(row) : null;
  }

  /** Jobs of a kind, paged by creation order; `after` is the id of the last job of the previous page. */
  listJobs(kind: JobKind, opts: ListOptions): { data: JobRecord[]; hasMore: boolean } | null {
    let cursor: number | null = null;
    if (opts.after !== undefined) {
      const row = this.db.prepare(`SELECT seq FROM jobs WHERE id = ? AND kind = ?`).get(opts.after, kind) as { seq: number } | undefined;
      if (!row) return null;
      cursor = row.seq;
    }
    const cmp = opts.order === 'asc' ? '>' : '<';
    const dir = opts.order === 'asc' ? 'ASC' : 'DESC';
    const where = cursor === null ? 'kind = ?' : `kind = ? AND seq ${cmp} ?`;
    const args: unknown[] = cursor === null ? [kind] : [kind, cursor];
    const rows = this.db
      .prepare(`SELECT * FROM jobs WHERE ${where} ORDER BY seq ${dir} LIMIT ?`)
      .all(...args, opts.limit + 1) as JobRow[];
    return { data: rows.slice(0, opts.limit).map(toJob), hasMore: rows.length > opts.limit };
  }

  jobsWithStatus(status: JobStatus): JobRecord[] {
    return (this.db.prepare(`SELECT * FROM jobs WHERE status = ? ORDER BY seq`).all(status) as JobRow[]).map(toJob);
  }

  countByKindAndStatus(): Array<{ kind: JobKind; status: JobStatus; n: number }> {
    return this.db.prepare(`SELECT kind, status, COUNT(*) AS n FROM jobs GROUP BY kind, status`).all() as Array<{
      kind: JobKind;
      status: JobStatus;
      n: number;
    }>;
  }

  markStarted(id: string, at: number): void {
    this.db.prepare(`UPDATE jobs SET status = 'in_progress', started_at = ?, progress = 0 WHERE id = ?`).run(at, id);
  }

  /** Replaces the stored parameters with the ones the pipeline resolved (e.g. a rounded frame count). */
  updateParams(id: string, params: JobParams): void {
    this.db.prepare(`UPDATE jobs SET params = ? WHERE id = ?`).run(JSON.stringify(params), id);
  }

  setProgress(id: string, progress: number): void {
    this.db.prepare(`UPDATE jobs SET progress = ? WHERE id = ? AND status = 'in_progress'`).run(progress, id);
  }

  /** Marks a job completed and records its images in one transaction. */
  complete(
    id: string,
    r: { completedAt: number; expiresAt: number | null; inferenceTimeS: number; peakMemoryMb: number; batchSize: number; images: ImageRecord[] },
  ): void {
    const tx = this.db.transaction(() => {
      this.db
        .prepare(
          `UPDATE jobs SET status = 'completed', progress = 100, completed_at = ?, expires_at = ?, inference_time_s = ?,
           peak_memory_mb = ?, batch_size = ?, error_code = NULL, error_message = NULL WHERE id = ?`,
        )
        .run(r.completedAt, r.expiresAt, r.inferenceTimeS, r.peakMemoryMb, r.batchSize, id);
      const ins = this.db.prepare(
        `INSERT INTO images (id, job_id, idx, format, width, height, bytes, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      for (const im of r.images) {
        ins.run(assertId(im.id, 'img'), id, im.index, im.format, im.width, im.height, im.bytes, im.createdAt, im.expiresAt);
      }
    });
    tx();
  }

  fail(id: string, error: JobError, at: number): void {
    this.db
      .prepare(`UPDATE jobs SET status = 'failed', completed_at = ?, error_code = ?, error_message = ? WHERE id = ?`)
      .run(at, error.code, error.message, id);
  }

  requeue(id: string): void {
    this.db.prepare(`UPDATE jobs SET status = 'queued', progress = 0, started_at = NULL WHERE id = ?`).run(id);
  }

  /** Deletes a job and its image records; returns the image records so their files can be removed. */
  deleteJob(id: string): ImageRecord[] {
    const tx = this.db.transaction(() => {
      const images = (this.db.prepare(`SELECT * FROM images WHERE job_id = ?`).all(id) as ImageRow[]).map(toImage);
      this.db.prepare(`DELETE FROM images WHERE job_id = ?`).run(id);
      this.db.prepare(`DELETE FROM jobs WHERE id = ?`).run(id);
      return images;
    });
    return tx();
  }

  getImage(id: string): ImageRecord | null {
    const row = this.db.prepare(`SELECT * FROM images WHERE id = ?`).get(id) as ImageRow | undefined;
    return row ? toImage(row) : null;
  }

  imagesOfJob(jobId: string): ImageRecord[] {
    return (this.db.prepare(`SELECT * FROM images WHERE job_id = ? ORDER BY idx`).all(jobId) as ImageRow[]).map(toImage);
  }

  /** Completed jobs and images whose files are past expires_at and not yet removed. */
  expiredFiles(now: number): { jobs: JobRecord[]; images: ImageRecord[] } {
    const jobs = (
      this.db.prepare(`SELECT * FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ? AND files_expired = 0`).all(now) as JobRow[]
    ).map(toJob);
    const images = (
      this.db.prepare(`SELECT * FROM images WHERE expires_at IS NOT NULL AND expires_at <= ? AND expired = 0`).all(now) as ImageRow[]
    ).map(toImage);
    return { jobs, images };
  }

  markFilesExpired(jobIds: string[], imageIds: string[]): void {
    const tx = this.db.transaction(() => {
      const j = this.db.prepare(`UPDATE jobs SET files_expired = 1 WHERE id = ?`);
      for (const id of jobIds) j.run(id);
      const i = this.db.prepare(`UPDATE images SET expired = 1 WHERE id = ?`);
      for (const id of imageIds) i.run(id);
    });
    tx();
  }

  /** Every job id and image id known, for sweeping orphaned files. */
  knownIds(): Set<string> {
    const ids = new Set<string>();
    for (const r of this.db.prepare(`SELECT id FROM jobs`).all() as Array<{ id: string }>) ids.add(r.id);
    for (const r of this.db.prepare(`SELECT id FROM images`).all() as Array<{ id: string }>) ids.add(r.id);
    return ids;
  }
}
