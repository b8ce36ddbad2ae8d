// The job runtime under stress, against real servers running demo:wan: a worker killed mid-job, the
// queue limit, output retention, health checks, metrics, request ids in logs, CORS and the API-key env var.
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';

import t from 'tap';

import { http, startServer, tempDir, waitFor } from '../helpers/server.js';

const TINY = { prompt: 'a boat', size: '32x32', num_frames: 5, num_inference_steps: 1 };
const LONG = { prompt: 'a long one', size: '64x64', num_frames: 9, num_inference_steps: 300 };

async function create(url: string, body: object, headers: Record<string, string> = {}) {
  const r = await http(`${url}/v1/videos`, { method: 'POST', json: body, headers });
  if (r.status !== 200) throw new Error(`create failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { id: string; status: string };
}

async function settled(url: string, id: string, headers: Record<string, string> = {}) {
  return waitFor(`job ${id} to settle`, async () => {
    const v = (await http(`${url}/v1/videos/${id}`, { headers })).body;
    return v.status === 'completed' || v.status === 'failed' ? v : undefined;
  });
}

t.test('a worker killed during a job: only that job fails, the worker comes back', async (t) => {
  const s = await startServer();
  t.teardown(() => s.close());
  const first = await create(s.url, LONG);
  const queued = await create(s.url, TINY);
  await waitFor('denoising', async () => {
    const v = (await http(`${s.url}/v1/videos/${first.id}`)).body;
    return v.status === 'in_progress' && v.progress > 5 ? v : undefined;
  });
  const pid = s.app.runtime.workerPid as number;
  t.ok(pid > 0 && pid !== process.pid, `worker pid ${pid}`);
  process.kill(pid, 'SIGKILL');
  const down = await waitFor('health to report the dead worker', async () => {
    const h = await http(`${s.url}/health`);
    return h.status === 503 ? h : undefined;
  });
  t.equal(down.body.error.code, 'worker_unavailable', '/health is 503 while the worker restarts');
  const failed = await settled(s.url, first.id);
  t.equal(failed.status, 'failed');
  t.equal(failed.error.code, 'worker_crashed');
  t.match(failed.error.message, /worker process died while running this job \(killed by SIGKILL\)/);
  t.notOk(existsSync(s.app.runtime.layout.videoFile(first.id)), 'no partial file');
  const next = await settled(s.url, queued.id);
  t.equal(next.status, 'completed', 'the queued job ran on the restarted worker');
  t.not(s.app.runtime.workerPid, pid, 'a new worker process');
  t.equal((await http(`${s.url}/health`)).status, 200);
  const after = await settled(s.url, (await create(s.url, TINY)).id);
  t.equal(after.status, 'completed', 'and the one after');
  const metrics = (await http(`${s.url}/metrics`)).body as string;
  t.match(metrics, /node_diffusion_worker_restarts_total 1\b/);
  t.match(metrics, /node_diffusion_jobs\{kind="video",status="failed"\} 1\b/);
  t.match(metrics, /node_diffusion_jobs\{kind="video",status="completed"\} 2\b/);
});

t.test('queue limit: 429 with Retry-After, and room again once jobs run', async (t) => {
  const s = await startServer({ maxQueue: 2 });
  t.teardown(() => s.close());
  const running = await create(s.url, LONG);
  await waitFor('the first job to start', async () => ((await http(`${s.url}/v1/videos/${running.id}`)).body.status === 'in_progress' ? true : undefined));
  const q1 = await create(s.url, TINY);
  const q2 = await create(s.url, TINY);
  const full = await http(`${s.url}/v1/videos`, { method: 'POST', json: TINY });
  t.equal(full.status, 429);
  t.equal(full.body.error.code, 'queue_full');
  t.equal(full.body.error.type, 'rate_limit_error');
  t.ok(Number(full.headers.get('retry-after')) >= 1, `Retry-After: ${full.headers.get('retry-after')}`);
  const list = (await http(`${s.url}/v1/videos?limit=100`)).body.data as unknown[];
  t.equal(list.length, 3, 'the refused request stored nothing');
  t.match((await http(`${s.url}/metrics`)).body, /node_diffusion_queue_depth 2\b/);
  await http(`${s.url}/v1/videos/${running.id}`, { method: 'DELETE' });
  for (const id of [q1.id, q2.id]) t.equal((await settled(s.url, id)).status, 'completed');
  t.equal((await http(`${s.url}/v1/videos`, { method: 'POST', json: TINY })).status, 200, 'accepted again');
});

t.test('--output-retention: expires_at set, files removed, content 404 afterwards', async (t) => {
  const s = await startServer({ outputRetentionSeconds: 1 });
  t.teardown(() => s.close());
  const v = await settled(s.url, (await create(s.url, TINY)).id);
  t.equal(v.status, 'completed');
  t.equal(v.expires_at, v.completed_at + 1);
  const file = s.app.runtime.layout.videoFile(v.id);
  await waitFor('the file to expire', () => (existsSync(file) ? undefined : true), 10_000);
  t.notOk(existsSync(s.app.runtime.layout.thumbnailFile(v.id)), 'thumbnail removed too');
  const c = await http(`${s.url}/v1/videos/${v.id}/content`);
  t.equal(c.status, 404);
  t.equal(c.body.error.code, 'content_expired');
  const still = (await http(`${s.url}/v1/videos/${v.id}`)).body;
  t.equal(still.status, 'completed', 'the job record stays');
});

t.test('health, health_generate, models, metrics, request ids in logs', async (t) => {
  const s = await startServer();
  t.teardown(() => s.close());
  t.same((await http(`${s.url}/health`)).body, { status: 'ok' });
  const hg = await http(`${s.url}/health_generate`);
  t.equal(hg.status, 200);
  t.equal(hg.body.status, 'ok');
  t.ok(hg.body.inference_time_s > 0);
  t.same((await http(`${s.url}/models`)).body, {
    model_path: 'demo:wan',
    task_type: 'T2V',
    pipeline_name: 'WanPipeline',
    pipeline_class: 'WanPipeline',
    num_gpus: 1,
    dit_precision: 'fp32',
    vae_precision: 'fp32',
  });
  const models = await s.client.models.list();
  t.equal(models.data.length, 1);
  t.match(models.data[0], { id: 'demo:wan', object: 'model', owned_by: 'node-diffusion', task_type: 'T2V', num_gpus: 1 });
  t.match(await s.client.models.retrieve('demo:wan'), { id: 'demo:wan', object: 'model' });
  await t.rejects(s.client.models.retrieve('nope'), /^404 /);

  const created = await http(`${s.url}/v1/videos`, { method: 'POST', json: TINY, headers: { 'x-request-id': 'trace-me-42' } });
  t.equal(created.headers.get('x-request-id'), 'trace-me-42', 'the given request id is echoed');
  await settled(s.url, created.body.id);
  const queuedLog = s.logs.find((l) => l.msg === 'job queued' && l.jobId === created.body.id);
  t.equal(queuedLog?.reqId, 'trace-me-42', 'the runtime logs the request id with the job');
  t.ok(s.logs.some((l) => l.reqId === 'trace-me-42' && l.msg === 'request completed'), 'fastify request logs carry it');
  const generated = await http(`${s.url}/health`);
  t.match(generated.headers.get('x-request-id'), /^req_[0-9a-f]{16}$/, 'generated when not given');

  const metrics = await http(`${s.url}/metrics`);
  t.match(metrics.headers.get('content-type'), /text\/plain/);
  const text = metrics.body as string;
  for (const re of [
    /node_diffusion_queue_depth 0\b/,
    /node_diffusion_jobs\{kind="video",status="completed"\} 1\b/,
    /node_diffusion_denoise_step_seconds_count [1-9]/,
    /node_diffusion_stage_seconds_count\{stage="denoise"\} [1-9]/,
    /node_diffusion_stage_seconds_count\{stage="encode_output"\} [1-9]/,
    /node_diffusion_worker_memory_bytes\{kind="rss"\} [1-9]/,
    /node_diffusion_worker_up 1\b/,
    /node_diffusion_server_process_resident_memory_bytes [1-9]/,
    /node_diffusion_http_request_seconds_count\{method="POST",route="\/v1\/videos",status="200"\} 1\b/,
  ]) {
    t.match(text, re, String(re));
  }
});

t.test('--warmup; API key from NODE_DIFFUSION_API_KEY; CORS preflight without credentials', async (t) => {
  process.env.NODE_DIFFUSION_API_KEY = 'sk-from-env';
  const s = await startServer({ apiKey: undefined, cors: true, warmup: true });
  delete process.env.NODE_DIFFUSION_API_KEY;
  t.teardown(() => s.close());
  t.equal((await http(`${s.url}/health`)).status, 200, 'up after the warmup generation');
  t.equal((await http(`${s.url}/models`)).status, 401);
  t.equal((await http(`${s.url}/models`, { headers: { authorization: 'Bearer sk-from-env' } })).status, 200);
  const pre = await http(`${s.url}/v1/videos`, {
    method: 'OPTIONS',
    headers: { origin: 'http://app.test', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' },
  });
  t.equal(pre.status, 204);
  t.equal(pre.headers.get('access-control-allow-origin'), 'http://app.test');
  const get = await http(`${s.url}/models`, { headers: { origin: 'http://app.test', authorization: 'Bearer sk-from-env' } });
  t.equal(get.headers.get('access-control-allow-origin'), 'http://app.test');
  t.match(get.headers.get('access-control-expose-headers'), /x-request-id/);
});

t.test('no CORS headers unless enabled', async (t) => {
  const s = await startServer();
  t.teardown(() => s.close());
  const r = await http(`${s.url}/models`, { headers: { origin: 'http://app.test' } });
  t.equal(r.headers.get('access-control-allow-origin'), null);
  const pre = await http(`${s.url}/v1/videos`, { method: 'OPTIONS', headers: { origin: 'http://app.test', 'access-control-request-method': 'POST' } });
  t.equal(pre.status, 404);
});

t.test('queued jobs of another model fail on restart instead of running on the new one', async (t) => {
  const out = await tempDir('nd-model-change-');
  t.teardown(() => rm(out, { recursive: true, force: true }));
  const a = await startServer({ outputPath: out, shutdownTimeoutMs: 100 });
  const done = await settled(a.url, (await create(a.url, TINY)).id);
  const running = await create(a.url, LONG);
  const queued = await create(a.url, TINY);
  await a.close();
  const b = await startServer({ outputPath: out, modelPath: 'demo:zimage' });
  t.teardown(() => b.close());
  const q = (await http(`${b.url}/v1/videos/${queued.id}`)).body;
  t.equal(q.status, 'failed');
  t.equal(q.error.code, 'model_changed');
  t.match(q.error.message, /queued for model 'demo:wan'; the server now serves 'demo:zimage'/);
  t.equal((await http(`${b.url}/v1/videos/${running.id}`)).body.error.code, 'server_shutdown');
  const old = await http(`${b.url}/v1/videos/${done.id}/content`);
  t.equal(old.status, 200, 'earlier videos are still served');
  const remix = await http(`${b.url}/v1/videos/${done.id}/remix`, { method: 'POST', json: { prompt: 'again' } });
  t.equal(remix.status, 400, 'but not remixed by another model');
  t.match(remix.body.error.message, /was made by 'demo:wan'; this server serves 'demo:zimage'/);
});
