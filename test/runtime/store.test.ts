// The SQLite job store, ids and the output layout: real database files in a temporary folder.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Database from 'better-sqlite3';
import t from 'tap';

import { assertId, isValidId, newId } from '../../lib/runtime/ids.js';
import { OutputLayout } from '../../lib/runtime/layout.js';
import { type JobParams, previewSteps } from '../../lib/runtime/protocol.js';
import { JobStore, SCHEMA_VERSION } from '../../lib/runtime/store.js';

const dir = await mkdtemp(join(tmpdir(), 'nd-store-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

const params = (prompt: string): JobParams => ({
  generation: { prompt, width: 32, height: 32, numFrames: 5, fps: 16, numInferenceSteps: 2, guidanceScale: 3, seed: 7, numOutputs: 1, inputImages: 0 },
  output: { format: 'mp4', quality: 50, partialImages: 0 },
});

t.test('ids: generated shape, strict validation', async (t) => {
  const v = newId('video');
  t.match(v, /^video_[0-9a-f]{32}$/);
  t.ok(isValidId(v));
  t.ok(isValidId(v, 'video'));
  t.notOk(isValidId(v, 'img'));
  t.not(newId('video'), v, 'random');
  for (const bad of [
    '',
    'video_',
    `video_${'a'.repeat(31)}`,
    `video_${'a'.repeat(33)}`,
    `video_${'A'.repeat(32)}`,
    `../video_${'a'.repeat(32)}`,
    `video_${'a'.repeat(32)}/../../etc/passwd`,
    `video_${'a'.repeat(32)}\n`,
    `audio_${'a'.repeat(32)}`,
    42,
    null,
  ]) {
    t.notOk(isValidId(bad), `rejects ${JSON.stringify(bad)}`);
  }
  t.throws(() => assertId('../x', 'video'), /malformed video id "..\/x"/);
});

t.test('layout builds paths only from valid ids', async (t) => {
  const layout = new OutputLayout(join(dir, 'out'));
  layout.createDirectories();
  const v = newId('video');
  const im = newId('img');
  t.equal(layout.videoFile(v), join(dir, 'out', 'videos', `${v}.mp4`));
  t.equal(layout.thumbnailFile(v), join(dir, 'out', 'videos', `${v}.thumbnail.webp`));
  t.equal(layout.imageFile(im, 'jpeg'), join(dir, 'out', 'images', `${im}.jpg`));
  t.equal(layout.inputFile(v, 2), join(dir, 'out', 'inputs', `${v}_2.png`));
  t.throws(() => layout.videoFile('../../etc/passwd'), /malformed video id/);
  t.throws(() => layout.videoFile(im), /malformed video id/, 'an image id is not a video id');
  t.throws(() => layout.imageFile(im, 'gif' as never), /unknown image format/);
  t.throws(() => layout.inputFile(v, -1), /bad input index/);
});

t.test('previewSteps spreads previews and never takes the last step', async (t) => {
  t.same([...previewSteps(4, 2)], [1, 2]);
  t.same([...previewSteps(8, 3)], [2, 4, 6]);
  t.same([...previewSteps(2, 3)], [1]);
  t.same([...previewSteps(1, 3)], []);
  t.same([...previewSteps(10, 0)], []);
});

t.test('jobs: insert, lifecycle, paging, deletion', async (t) => {
  const file = join(dir, 'a.sqlite');
  const store = new JobStore(file);
  t.teardown(() => store.close());
  const ids: string[] = [];
  for (let i = 0; i < 5; ++i) {
    const id = newId('video');
    ids.push(id);
    store.insertJob({ id, kind: 'video', model: 'demo:wan', prompt: `p${i}`, params: params(`p${i}`), createdAt: 1000 + i });
  }
  const imgJob = newId('imgreq');
  store.insertJob({ id: imgJob, kind: 'image', model: 'demo:wan', prompt: 'img', params: params('img'), createdAt: 2000 });

  const j0 = store.getJob(ids[0] as string);
  t.equal(j0?.status, 'queued');
  t.equal(j0?.progress, 0);
  t.same(j0?.params, params('p0'), 'params round-trip as JSON');
  t.equal(store.getJob('nope'), null);

  const page1 = store.listJobs('video', { limit: 2, order: 'desc' });
  t.same(page1?.data.map((j) => j.id), [ids[4], ids[3]]);
  t.equal(page1?.hasMore, true);
  const page2 = store.listJobs('video', { limit: 2, order: 'desc', after: ids[3] });
  t.same(page2?.data.map((j) => j.id), [ids[2], ids[1]]);
  const page3 = store.listJobs('video', { limit: 2, order: 'desc', after: ids[1] });
  t.same(page3?.data.map((j) => j.id), [ids[0]]);
  t.equal(page3?.hasMore, false);
  t.same(store.listJobs('video', { limit: 10, order: 'asc' })?.data.map((j) => j.id), ids, 'asc, image jobs excluded');
  t.equal(store.listJobs('video', { limit: 2, order: 'asc', after: imgJob }), null, 'cursor of another kind is unknown');

  store.markStarted(ids[0] as string, 1100);
  store.setProgress(ids[0] as string, 40);
  t.equal(store.getJob(ids[0] as string)?.status, 'in_progress');
  t.equal(store.getJob(ids[0] as string)?.progress, 40);
  store.setProgress(ids[1] as string, 40);
  t.equal(store.getJob(ids[1] as string)?.progress, 0, 'progress only moves while in progress');

  const img = newId('img');
  store.markStarted(imgJob, 2001);
  store.complete(imgJob, {
    completedAt: 2002,
    expiresAt: 3000,
    inferenceTimeS: 1.5,
    peakMemoryMb: 12,
    batchSize: 3,
    images: [{ id: img, jobId: imgJob, index: 0, format: 'png', width: 32, height: 32, bytes: 99, createdAt: 2002, expiresAt: 3000, expired: false }],
  });
  const done = store.getJob(imgJob);
  t.equal(done?.status, 'completed');
  t.equal(done?.progress, 100);
  t.equal(done?.inferenceTimeS, 1.5);
  t.equal(done?.batchSize, 3, 'the batch it ran in');
  t.equal(store.getJob(ids[1] as string)?.batchSize, null, 'none before completion');
  t.equal(store.getImage(img)?.bytes, 99);
  t.same(store.imagesOfJob(imgJob).map((i) => i.id), [img]);

  store.fail(ids[0] as string, { code: 'worker_crashed', message: 'boom' }, 1200);
  t.same(store.getJob(ids[0] as string)?.error, { code: 'worker_crashed', message: 'boom' });
  t.equal(store.getJob(ids[0] as string)?.status, 'failed');

  t.same(
    store.countByKindAndStatus().sort((a, b) => `${a.kind}${a.status}`.localeCompare(`${b.kind}${b.status}`)),
    [
      { kind: 'image', status: 'completed', n: 1 },
      { kind: 'video', status: 'failed', n: 1 },
      { kind: 'video', status: 'queued', n: 4 },
    ],
  );

  const expired = store.expiredFiles(3000);
  t.same(expired.jobs.map((j) => j.id), [imgJob]);
  t.same(expired.images.map((i) => i.id), [img]);
  t.same(store.expiredFiles(2999).jobs, [], 'not before expires_at');
  store.markFilesExpired([imgJob], [img]);
  t.same(store.expiredFiles(4000).jobs, [], 'expired once');
  t.equal(store.getImage(img)?.expired, true);
  t.equal(store.getJob(imgJob)?.filesExpired, true);

  const removed = store.deleteJob(imgJob);
  t.same(removed.map((i) => i.id), [img], 'returns the image records to remove');
  t.equal(store.getJob(imgJob), null);
  t.equal(store.getImage(img), null);
  t.ok(store.knownIds().has(ids[1] as string));
  t.notOk(store.knownIds().has(img));
});

t.test('database: WAL, schema version, survives reopening', async (t) => {
  const file = join(dir, 'b.sqlite');
  const id = newId('video');
  const s1 = new JobStore(file);
  s1.insertJob({ id, kind: 'video', model: 'm', prompt: 'x', params: params('x'), createdAt: 1 });
  s1.close();
  const raw = new Database(file);
  t.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  t.equal((raw.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string }).value, String(SCHEMA_VERSION));
  raw.close();
  const s2 = new JobStore(file);
  t.equal(s2.getJob(id)?.prompt, 'x', 'the job is still there');
  s2.close();

  const newer = new Database(file);
  newer.prepare(`UPDATE meta SET value = '99' WHERE key = 'schema_version'`).run();
  newer.close();
  t.throws(() => new JobStore(file), /schema version 99 is not supported by this version \(expects 2\)/);
});

t.test('a version 1 database (no batch sizes) is migrated in place, its jobs kept', async (t) => {
  const file = join(dir, 'v1.sqlite');
  const id = newId('video');
  const s1 = new JobStore(file);
  s1.insertJob({ id, kind: 'video', model: 'm', prompt: 'old', params: params('old'), createdAt: 1 });
  s1.close();
  // back to what version 1 wrote: no batch_size column
  const raw = new Database(file);
  raw.exec(`ALTER TABLE jobs DROP COLUMN batch_size`);
  raw.prepare(`UPDATE meta SET value = '1' WHERE key = 'schema_version'`).run();
  raw.close();
  const s2 = new JobStore(file);
  t.teardown(() => s2.close());
  t.match(s2.getJob(id), { prompt: 'old', batchSize: null });
  s2.markStarted(id, 2);
  s2.complete(id, { completedAt: 3, expiresAt: null, inferenceTimeS: 1, peakMemoryMb: 1, batchSize: 2, images: [] });
  t.equal(s2.getJob(id)?.batchSize, 2);
  const check = new Database(file, { readonly: true });
  t.equal((check.prepare(`SELECT value FROM meta WHERE key = 'schema_version'`).get() as { value: string }).value, '2');
  check.close();
});

t.test('the store rejects ids that are not generated ids', async (t) => {
  const store = new JobStore(join(dir, 'c.sqlite'));
  t.teardown(() => store.close());
  t.throws(() => store.insertJob({ id: '../evil', kind: 'video', model: 'm', prompt: 'x', params: params('x'), createdAt: 1 }), /malformed id/);
  const job = newId('imgreq');
  store.insertJob({ id: job, kind: 'image', model: 'm', prompt: 'x', params: params('x'), createdAt: 1 });
  t.throws(
    () =>
      store.complete(job, {
        completedAt: 2,
        expiresAt: null,
        inferenceTimeS: 1,
        peakMemoryMb: 1,
        batchSize: 1,
        images: [{ id: 'x/../y', jobId: job, index: 0, format: 'png', width: 1, height: 1, bytes: 1, createdAt: 2, expiresAt: null, expired: false }],
      }),
    /malformed img id/,
  );
  t.equal(store.getJob(job)?.status, 'queued', 'the failed transaction changed nothing');
});
