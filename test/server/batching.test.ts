// Request batching against a real server on loopback running demo:zimage with --max-batch-size 4:
// compatible requests queued behind a running job run as one pipeline batch (batch_size in each
// response, the batch-size histogram in /metrics) and each gets the pixels it gets alone (n > 1 too:
// per-output seeds); an incompatible request or a weight operation queued between two requests splits
// them; streamed partial images per request of a batch; cancelling one request of a running batch
// leaves the others completed; a worker crash fails every job of the batch, and the next one runs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { pipelineLoraTargets } from '../../lib/lora/manager.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import { http, startServer, type TestServer, waitFor } from '../helpers/server.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-batching-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

interface ImagesBody {
  data: Array<{ b64_json: string }>;
  batch_size: number;
}

const SMALL = { size: '32x32', num_inference_steps: 2 } as const;
const A = { prompt: 'a red fox in snow', seed: 7, n: 2, ...SMALL };
const B = { prompt: 'a lighthouse at night', seed: 100, ...SMALL };
const C = { prompt: 'a bowl of soup', seed: 5, ...SMALL, output_format: 'jpeg' };

let s: TestServer;
t.before(async () => {
  s = await startServer({ modelPath: 'demo:zimage', maxBatchSize: 4 });
});
t.teardown(() => s.close());

async function generate(body: object, signal?: AbortSignal): Promise<{ status: number; body: ImagesBody & { error?: { code: string; message: string } } }> {
  return http(`${s.url}/v1/images/generations`, { method: 'POST', json: body, ...(signal ? { signal } : {}) });
}

async function pixels(b64: string): Promise<Buffer> {
  return sharp(Buffer.from(b64, 'base64')).removeAlpha().raw().toBuffer();
}

/** The largest difference of two decoded images, in 8-bit levels. */
async function maxLevelDiff(a: string, b: string): Promise<number> {
  const [pa, pb] = await Promise.all([pixels(a), pixels(b)]);
  if (pa.length !== pb.length) return 255;
  return pa.reduce((m, v, i) => Math.max(m, Math.abs(v - pb[i]!)), 0);
}

/**
 * A long request the worker is busy with (until `release` cancels it by going away), so the requests
 * sent meanwhile queue up behind it.
 */
async function blockWorker(): Promise<{ release(): Promise<void> }> {
  const rt = s.app.runtime;
  const controller = new AbortController();
  const done = generate({ prompt: 'blocker', size: '32x32', num_inference_steps: 1000 }, controller.signal).catch(() => undefined);
  await waitFor('the blocking job to run', () => (rt.store.jobsWithStatus('in_progress').length === 1 && rt.queueDepth === 0 ? true : undefined));
  return {
    async release() {
      controller.abort();
      await done;
    },
  };
}

/** Waits until `count` requests wait in the queue. */
async function queued(count: number): Promise<void> {
  await waitFor(`${count} queued requests`, () => (s.app.runtime.queueDepth === count ? true : undefined));
}

/** The count and sum of the batch-size histogram. */
async function batchMetric(): Promise<{ count: number; sum: number }> {
  const text = (await http(`${s.url}/metrics`)).body as string;
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return { count: value('node_diffusion_batch_size_count'), sum: value('node_diffusion_batch_size_sum') };
}

const alone = new Map<string, ImagesBody>();

t.test('alone: each request runs as a batch of one', async (t) => {
  t.equal(s.logs.find((l) => l.msg === 'worker ready')?.maxBatchSize, 4, '--max-batch-size 4');
  for (const [name, body] of Object.entries({ A, B, C })) {
    const r = await generate(body);
    t.equal(r.status, 200, name);
    t.equal(r.body.batch_size, 1, `${name} ran alone`);
    alone.set(name, r.body);
  }
  t.equal(alone.get('A')!.data.length, 2);
  t.ok((await maxLevelDiff(alone.get('A')!.data[0]!.b64_json, alone.get('A')!.data[1]!.b64_json)) > 1, "A's two outputs differ (seeds 7, 8)");
});

t.test('compatible requests queued behind a running job run as one batch, each with its own pixels', async (t) => {
  const before = await batchMetric();
  const blocker = await blockWorker();
  const results = [generate(A), generate(B), generate(C)];
  await queued(3);
  await blocker.release();
  const [a, b, c] = await Promise.all(results);
  for (const [name, r] of Object.entries({ A: a!, B: b!, C: c! })) {
    t.equal(r.status, 200, name);
    t.equal(r.body.batch_size, 3, `${name} ran in a batch of 3`);
    const expected = alone.get(name)!;
    t.equal(r.body.data.length, expected.data.length);
    for (const [i, d] of r.body.data.entries()) {
      // the same pixels up to float rounding of the batched GEMMs (a level; JPEG may spread it over a few)
      const tolerance = name === 'C' ? 3 : 1;
      t.ok((await maxLevelDiff(d.b64_json, expected.data[i]!.b64_json)) <= tolerance, `${name}[${i}]: the pixels it gets alone`);
    }
  }
  t.equal(Buffer.from(c!.body.data[0]!.b64_json, 'base64').subarray(0, 2).toString('hex'), 'ffd8', 'C kept its own output format (JPEG)');
  const after = await batchMetric();
  // the blocker (1) and the batch (3)
  t.same([after.count - before.count, after.sum - before.sum], [2, 4], 'node_diffusion_batch_size observed each pipeline run');
});

t.test('an incompatible request queued in between splits the batch', async (t) => {
  const blocker = await blockWorker();
  const results = [generate(B), generate({ ...C, size: '48x32' }), generate(C)];
  await queued(3);
  await blocker.release();
  const [b, other, c] = await Promise.all(results);
  t.same([b!.body.batch_size, other!.body.batch_size, c!.body.batch_size], [1, 1, 1], 'no job overtakes the one of another size');
  t.ok((await maxLevelDiff(c!.body.data[0]!.b64_json, alone.get('C')!.data[0]!.b64_json)) <= 3);
  const blocker2 = await blockWorker();
  const steps = [generate(B), generate({ ...C, num_inference_steps: 3 }), generate({ ...B, guidance_scale: 2 })];
  await queued(3);
  await blocker2.release();
  t.same((await Promise.all(steps)).map((r) => r.body.batch_size), [1, 1, 1], 'other steps or guidance scale: alone');
});

t.test('streamed partial images per request of a batch', async (t) => {
  const blocker = await blockWorker();
  const streamed = fetch(`${s.url}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...B, num_inference_steps: 4, stream: true, partial_images: 1 }),
  });
  const plain = generate({ ...A, num_inference_steps: 4 });
  await queued(2);
  await blocker.release();
  const text = await (await streamed).text();
  const events = text
    .split('\n\n')
    .filter((e) => e.startsWith('event: '))
    .map((e) => ({ name: e.slice(7, e.indexOf('\n')), data: JSON.parse(e.slice(e.indexOf('data: ') + 6)) as Record<string, unknown> }));
  t.same(events.map((e) => e.name), ['image_generation.partial_image', 'image_generation.completed'], 'one preview (of its own item), then its image');
  t.equal(events[0]!.data.size, '32x32');
  t.equal(events[1]!.data.batch_size, 2);
  const meta = await sharp(Buffer.from(events[0]!.data.b64_json as string, 'base64')).metadata();
  t.same([meta.width, meta.height], [32, 32]);
  const other = await plain;
  t.equal(other.body.batch_size, 2);
  t.equal(other.body.data.length, 2, 'the request batched with it kept its 2 outputs');
});

t.test('cancelling one request of a running batch leaves the others completed', async (t) => {
  const rt = s.app.runtime;
  const blocker = await blockWorker();
  const LONG = { num_inference_steps: 120 };
  const gone = new AbortController();
  const kept1 = generate({ ...A, ...LONG });
  const cancelled = generate({ ...B, ...LONG }, gone.signal).catch((err: Error) => err);
  const kept2 = generate({ ...C, ...LONG });
  await queued(3);
  await blocker.release();
  await waitFor('the batch to denoise', () =>
    rt.store.jobsWithStatus('in_progress').length === 3 && rt.store.jobsWithStatus('in_progress').every((j) => j.progress > 5) ? true : undefined,
  );
  const [victim] = rt.store.jobsWithStatus('in_progress').filter((j) => j.prompt === B.prompt);
  gone.abort();
  await waitFor('the cancelled job to be gone at once', () => (rt.getJob(victim!.id) === null ? true : undefined), 5000);
  t.equal(rt.store.jobsWithStatus('in_progress').length, 2, 'the other two still run');
  t.match(await cancelled, { name: 'AbortError' });
  const [r1, r2] = await Promise.all([kept1, kept2]);
  t.same([r1.status, r1.body.batch_size, r1.body.data.length], [200, 3, 2], 'A completed in the batch');
  t.same([r2.status, r2.body.batch_size, r2.body.data.length], [200, 3, 1], 'C completed in the batch');
  t.same(rt.store.imagesOfJob(victim!.id), [], 'no image of the cancelled request');
  t.match((await http(`${s.url}/metrics`)).body, /node_diffusion_jobs_finished_total\{kind="image",outcome="cancelled"\} [1-9]/);
});

t.test('a weight operation queued between two requests: they do not batch across it', async (t) => {
  // a LoRA of the demo transformer's shapes
  const local = await loadPipeline('demo:zimage', { device: 'cpu' });
  const dit = pipelineLoraTargets(local).transformer!;
  const module = 'layers.0.attention.to_q';
  const [out, inp] = dit.parameter(`${module}.weight`).shape as [number, number];
  const down = E.mul(E.randn([4, inp], { seed: 1 }), 0.5);
  const up = E.mul(E.randn([out, 4], { seed: 2 }), 0.5);
  const loraPath = join(tmp, 'lora.safetensors');
  writeSafetensors(loraPath, { [`transformer.${module}.lora_A.weight`]: down, [`transformer.${module}.lora_B.weight`]: up });
  E.disposeAll([down, up]);
  local.dispose();

  const blocker = await blockWorker();
  const before = generate(B);
  await queued(1);
  const set = http(`${s.url}/v1/set_lora`, { method: 'POST', json: { lora_nickname: 'q', lora_path: loraPath, strength: 1 } });
  const after = generate(B);
  await queued(2);
  await blocker.release();
  const [b1, setR, b2] = await Promise.all([before, set, after]);
  t.equal(setR.status, 200);
  t.same([b1.body.batch_size, b2.body.batch_size], [1, 1], 'each ran alone, on its own side of the weight change');
  t.ok((await maxLevelDiff(b1.body.data[0]!.b64_json, alone.get('B')!.data[0]!.b64_json)) <= 1, 'the first on the old weights');
  t.ok((await maxLevelDiff(b2.body.data[0]!.b64_json, alone.get('B')!.data[0]!.b64_json)) > 1, 'the second on the new ones');
  t.equal((await http(`${s.url}/v1/unmerge_lora_weights`, { method: 'POST' })).status, 200);
});

t.test('a worker crash fails every job of the batch; the next request runs', async (t) => {
  const rt = s.app.runtime;
  const blocker = await blockWorker();
  const LONG = { num_inference_steps: 1000 };
  const results = [generate({ ...B, ...LONG }), generate({ ...C, ...LONG })];
  await queued(2);
  await blocker.release();
  await waitFor('the batch to run', () => (rt.store.jobsWithStatus('in_progress').length === 2 ? true : undefined));
  process.kill(rt.workerPid as number, 'SIGKILL');
  for (const r of await Promise.all(results)) {
    t.equal(r.status, 500);
    t.equal(r.body.error?.code, 'worker_crashed');
    t.match(r.body.error?.message, /worker process died while running this job with 1 other job\(s\) of its batch \(killed by SIGKILL\)/);
  }
  await waitFor('the worker to restart', async () => ((await http(`${s.url}/health`)).status === 200 ? true : undefined));
  const next = await generate(B);
  t.same([next.status, next.body.batch_size], [200, 1]);
});
