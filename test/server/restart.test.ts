// `node-diffusion serve` as a real process on one --output-path: killed mid-job and started again (jobs and
// files survive, the running job is failed or requeued, queued jobs run), and stopped gracefully by SIGTERM.
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';

import t from 'tap';

import { decodeMp4 } from '../helpers/media.js';
import { http, killSpawned, spawnServe, tempDir, waitFor } from '../helpers/server.js';

const TINY = { prompt: 'a harbour', size: '32x32', num_frames: 5, num_inference_steps: 1 };
const LONG = { prompt: 'a long one', size: '64x64', num_frames: 9, num_inference_steps: 1000 };

const out = await tempDir('nd-restart-');
t.teardown(async () => {
  await killSpawned();
  await rm(out, { recursive: true, force: true });
});

async function create(url: string, body: object): Promise<string> {
  const r = await http(`${url}/v1/videos`, { method: 'POST', json: body });
  if (r.status !== 200) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id as string;
}

const get = async (url: string, id: string) => (await http(`${url}/v1/videos/${id}`)).body;

async function status(url: string, id: string, want: (s: string, p: number) => boolean) {
  return waitFor(`job ${id}`, async () => {
    const v = await get(url, id);
    return want(v.status, v.progress) ? v : undefined;
  });
}

t.test('killed while running, started again on the same output path', async (t) => {
  const a = await spawnServe(['--model-path', 'demo:wan', '--device', 'cpu', '--output-path', out]);
  const done = await create(a.url, TINY);
  await status(a.url, done, (s) => s === 'completed');
  const mp4 = await readFile(join(out, 'videos', `${done}.mp4`));
  const running = await create(a.url, LONG);
  const queued = await create(a.url, TINY);
  await status(a.url, running, (s, p) => s === 'in_progress' && p > 5);
  a.child.kill('SIGKILL');
  await a.exited;

  const b = await spawnServe(['--model-path', 'demo:wan', '--device', 'cpu', '--output-path', out]);
  t.teardown(killSpawned);
  const kept = await get(b.url, done);
  t.equal(kept.status, 'completed', 'completed job still listed');
  const again = await http(`${b.url}/v1/videos/${done}/content`);
  t.equal(again.status, 200);
  t.same(again.bytes, mp4, 'and its file is still downloadable, byte for byte');
  t.equal((await decodeMp4(again.bytes)).frames.length, 5);
  const failed = await get(b.url, running);
  t.equal(failed.status, 'failed', 'the running job is failed');
  t.equal(failed.error.code, 'server_restarted');
  t.match(failed.error.message, /the server stopped while this job was running/);
  const ran = await status(b.url, queued, (s) => s === 'completed' || s === 'failed');
  t.equal(ran.status, 'completed', 'the queued job ran after the restart');
  const ids = ((await http(`${b.url}/v1/videos?order=asc`)).body.data as Array<{ id: string }>).map((v) => v.id);
  t.same(ids, [done, running, queued], 'the list survives in order');
});

t.test('SIGTERM: the running job is failed within --shutdown-timeout; queued ones wait for the next start', async (t) => {
  const c = await spawnServe(['--model-path', 'demo:wan', '--device', 'cpu', '--output-path', out, '--shutdown-timeout', '1s']);
  const running = await create(c.url, LONG);
  const waiting = await create(c.url, TINY);
  await status(c.url, running, (s, p) => s === 'in_progress' && p > 5);
  const t0 = Date.now();
  c.child.kill('SIGTERM');
  const exit = await c.exited;
  t.equal(exit.code, 0, 'clean exit');
  t.ok(Date.now() - t0 < 15_000, `stopped in ${Date.now() - t0} ms`);
  t.ok(c.lines.some((l) => l.includes('waiting for the running job before shutdown')));

  const d = await spawnServe(['--model-path', 'demo:wan', '--device', 'cpu', '--output-path', out]);
  t.teardown(killSpawned);
  const r = await get(d.url, running);
  t.equal(r.status, 'failed');
  t.equal(r.error.code, 'server_shutdown');
  const w = await status(d.url, waiting, (s) => s === 'completed' || s === 'failed');
  t.equal(w.status, 'completed', 'the queued job was kept and ran on the next start');
});

t.test('--requeue-on-restart runs the interrupted job again', async (t) => {
  const e = await spawnServe(['--model-path', 'demo:wan', '--device', 'cpu', '--output-path', out]);
  const job = await create(e.url, { ...LONG, num_inference_steps: 120 });
  await status(e.url, job, (s, p) => s === 'in_progress' && p > 5);
  e.child.kill('SIGKILL');
  await e.exited;
  const f = await spawnServe(['--model-path', 'demo:wan', '--device', 'cpu', '--output-path', out, '--requeue-on-restart']);
  t.teardown(killSpawned);
  const v = await waitFor('the requeued job', async () => {
    const x = await get(f.url, job);
    return x.status === 'completed' || x.status === 'failed' ? x : undefined;
  }, 120_000);
  t.equal(v.status, 'completed');
  t.equal(v.error, null);
});
