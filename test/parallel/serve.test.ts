// A server whose worker is a group of CPU rank processes (--num-gpus 2 --device cpu): jobs run on all
// ranks in lockstep, rank 0 writes the output; a cancelled job stops every rank at the same step and
// the group goes on; a rank killed mid-job fails that job with an error naming the rank, the group
// is restarted and the next job succeeds; compatible queued jobs run as one batch on the ranks, and
// cancelling one of them leaves the other to complete.
import { existsSync, statSync } from 'node:fs';

import t from 'tap';

import { http, startServer, waitFor } from '../helpers/server.js';

const TINY = { prompt: 'a boat', size: '32x32', num_frames: 5, num_inference_steps: 2 };
const LONG = { prompt: 'a long one', size: '64x64', num_frames: 9, num_inference_steps: 300 };

async function create(url: string, body: object) {
  const r = await http(`${url}/v1/videos`, { method: 'POST', json: body });
  if (r.status !== 200) throw new Error(`create failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { id: string; status: string };
}

async function settled(url: string, id: string) {
  return waitFor(`job ${id} to settle`, async () => {
    const v = (await http(`${url}/v1/videos/${id}`)).body;
    return v.status === 'completed' || v.status === 'failed' ? v : undefined;
  });
}

async function denoising(url: string, id: string) {
  await waitFor('denoising', async () => {
    const v = (await http(`${url}/v1/videos/${id}`)).body;
    return v.status === 'in_progress' && v.progress > 5 ? v : undefined;
  });
}

const s = await startServer({ numGpus: 2, maxBatchSize: 4 });
t.teardown(() => s.close());

t.test('two ranks serve a job; rank 0 writes the video', async (t) => {
  const pids = s.app.runtime.workerPids;
  t.equal(pids.length, 2, 'one process per rank');
  t.equal(new Set([...pids, process.pid]).size, 3, 'distinct processes');
  t.equal((await http(`${s.url}/models`)).body.num_gpus, 2);
  const job = await settled(s.url, (await create(s.url, TINY)).id);
  t.equal(job.status, 'completed');
  const file = s.app.runtime.layout.videoFile(job.id);
  t.ok(existsSync(file) && statSync(file).size > 0, 'the video was written');
  const ready = s.logs.find((l) => l.msg === 'worker ready');
  t.equal(ready?.pid, pids[0], 'rank 0 reports');
});

t.test('a cancelled job stops every rank; the same ranks run the next job', async (t) => {
  const pids = s.app.runtime.workerPids;
  const long = await create(s.url, LONG);
  await denoising(s.url, long.id);
  t.equal((await http(`${s.url}/v1/videos/${long.id}`, { method: 'DELETE' })).status, 200);
  const next = await settled(s.url, (await create(s.url, TINY)).id);
  t.equal(next.status, 'completed', 'the next job ran');
  t.same(s.app.runtime.workerPids, pids, 'no rank was restarted');
});

t.test('compatible jobs run as one batch on the ranks; one cancelled mid-batch, the other completes', async (t) => {
  const pids = s.app.runtime.workerPids;
  const blocker = await create(s.url, LONG);
  await denoising(s.url, blocker.id);
  const BATCHED = { ...TINY, num_inference_steps: 300 };
  const cancelled = await create(s.url, { ...BATCHED, seed: 1 });
  const kept = await create(s.url, { ...BATCHED, prompt: 'a lighthouse', seed: 2 });
  await http(`${s.url}/v1/videos/${blocker.id}`, { method: 'DELETE' });
  await denoising(s.url, cancelled.id);
  t.equal((await http(`${s.url}/v1/videos/${kept.id}`)).body.status, 'in_progress', 'both run together');
  t.equal((await http(`${s.url}/v1/videos/${cancelled.id}`, { method: 'DELETE' })).status, 200);
  const done = await settled(s.url, kept.id);
  t.same([done.status, done.batch_size], ['completed', 2], 'the other job of the batch completed');
  t.equal((await http(`${s.url}/v1/videos/${cancelled.id}`)).status, 404, 'the cancelled one is gone');
  t.notOk(existsSync(s.app.runtime.layout.videoFile(cancelled.id)), 'and wrote no video');
  t.same(s.app.runtime.workerPids, pids, 'no rank was restarted');
  const alone = await settled(s.url, (await create(s.url, TINY)).id);
  t.same([alone.status, alone.batch_size], ['completed', 1]);
});

t.test('a rank killed mid-job: the job fails naming it, the group restarts, the next job succeeds', async (t) => {
  const [rank0, rank1] = s.app.runtime.workerPids as [number, number];
  const long = await create(s.url, LONG);
  const queued = await create(s.url, TINY);
  await denoising(s.url, long.id);
  process.kill(rank1, 'SIGKILL');
  const failed = await settled(s.url, long.id);
  t.equal(failed.status, 'failed');
  t.equal(failed.error.code, 'worker_crashed');
  t.equal(
    failed.error.message,
    `the worker process died while running this job (rank 1 of 2 (pid ${rank1}) was killed by SIGKILL); the job did not finish`,
  );
  t.notOk(existsSync(s.app.runtime.layout.videoFile(long.id)), 'no partial file');
  const next = await settled(s.url, queued.id);
  t.equal(next.status, 'completed', 'the queued job ran on the new group');
  const now = s.app.runtime.workerPids;
  t.equal(now.length, 2);
  t.notOk(now.includes(rank0) || now.includes(rank1), 'every rank is a new process');
  let alive = true;
  try {
    process.kill(rank0, 0);
  } catch {
    alive = false;
  }
  t.notOk(alive, 'the old rank 0 was stopped');
  t.match((await http(`${s.url}/metrics`)).body, /node_diffusion_worker_restarts_total 1\b/);
});
