// npm run load: N concurrent clients against a real `node-diffusion serve` on loopback for a bounded time.
// Each client keeps one tiny video job of its own in flight: it submits, polls the job, lists videos, checks
// health, downloads the MP4 when done, and submits again. Prints throughput, p50/p99 latency per API route,
// errors (must be 0) and the server's RSS before and after (from /metrics).
//
//   npm run load -- [--clients 8] [--duration 20] [--model demo:wan] [--max-batch-size N] [--url http://host:port] [--json file]
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '8' },
    duration: { type: 'string', default: '20' },
    model: { type: 'string', default: 'demo:wan' },
    /** passed to serve (request batching; serve's default when not given) */
    'max-batch-size': { type: 'string' },
    url: { type: 'string' },
    json: { type: 'string' },
  },
});
const CLIENTS = Number(args.clients);
const DURATION_S = Number(args.duration);
if (!(CLIENTS >= 1) || !(DURATION_S > 0)) throw new Error('--clients and --duration must be positive');
const JOB = { prompt: 'a sailboat on a lake', size: '32x32', num_frames: 5, num_inference_steps: 2 };

async function startServer(): Promise<{ url: string; child: ChildProcess; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'nd-load-'));
  const main = resolve(import.meta.dirname, '../lib/cli/main.ts');
  const script = `const m = await import(${JSON.stringify(main)}); process.exitCode = await m.main(process.argv.slice(1));`;
  const child = spawn(
    process.execPath,
    ['--import=tsx', '--input-type=module', '-e', script, 'serve', '--model-path', args.model as string, '--port', '0', '--output-path', dir, '--device', 'cpu',
      ...(args['max-batch-size'] ? ['--max-batch-size', args['max-batch-size']] : [])],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise<string>((res, rej) => {
    let buf = '';
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
      const m = /"address":"(http:\/\/[^"]+)"/.exec(buf);
      if (m) res(m[1] as string);
    });
    child.once('exit', (code) => rej(new Error(`serve exited with ${code} before listening`)));
  });
  return { url, child, dir };
}

class Latencies {
  private readonly byRoute = new Map<string, number[]>();
  add(route: string, ms: number): void {
    const list = this.byRoute.get(route) ?? [];
    list.push(ms);
    this.byRoute.set(route, list);
  }
  rows(): Array<{ route: string; n: number; p50: number; p99: number; max: number }> {
    const q = (s: number[], p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] as number;
    return [...this.byRoute.entries()].map(([route, l]) => {
      const s = [...l].sort((a, b) => a - b);
      return { route, n: s.length, p50: q(s, 0.5), p99: q(s, 0.99), max: s[s.length - 1] as number };
    });
  }
  get total(): number {
    let n = 0;
    for (const l of this.byRoute.values()) n += l.length;
    return n;
  }
}

async function rss(url: string): Promise<{ server: number; worker: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const num = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  return {
    server: num(/^node_diffusion_server_process_resident_memory_bytes (\d+)/m),
    worker: num(/^node_diffusion_worker_memory_bytes\{kind="rss"\} (\d+)/m),
  };
}

const lat = new Latencies();
const errors: string[] = [];
let jobsCompleted = 0;

async function call(route: string, url: string, init?: RequestInit & { json?: unknown }): Promise<any> {
  const headers = new Headers(init?.headers);
  let body = init?.body;
  if (init?.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const t0 = performance.now();
  const res = await fetch(url, { ...init, headers, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  lat.add(route, performance.now() - t0);
  if (!res.ok) {
    errors.push(`${route}: HTTP ${res.status} ${bytes.toString().slice(0, 200)}`);
    return null;
  }
  return (res.headers.get('content-type') ?? '').includes('json') ? JSON.parse(bytes.toString()) : bytes;
}

async function client(base: string, deadline: number): Promise<void> {
  let job: string | null = null;
  while (performance.now() < deadline) {
    if (!job) {
      const created = await call('POST /v1/videos', `${base}/v1/videos`, { method: 'POST', json: JOB });
      job = created?.id ?? null;
      continue;
    }
    const v = await call('GET /v1/videos/{id}', `${base}/v1/videos/${job}`);
    if (v?.status === 'completed') {
      const mp4 = await call('GET /v1/videos/{id}/content', `${base}/v1/videos/${job}/content`);
      if (mp4 && mp4.toString('latin1', 4, 8) !== 'ftyp') errors.push(`content of ${job} is not an MP4`);
      jobsCompleted++;
      job = null;
    } else if (v?.status === 'failed') {
      errors.push(`job ${job} failed: ${JSON.stringify(v.error)}`);
      job = null;
    }
    await call('GET /v1/videos', `${base}/v1/videos?limit=20`);
    await call('GET /health', `${base}/health`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const own = args.url ? null : await startServer();
const base = args.url ?? (own as { url: string }).url;
try {
  await call('GET /models', `${base}/models`);
  const before = await rss(base);
  const t0 = performance.now();
  const deadline = t0 + DURATION_S * 1000;
  await Promise.all(Array.from({ length: CLIENTS }, () => client(base, deadline)));
  const wall = (performance.now() - t0) / 1000;
  const after = await rss(base);
  const mb = (b: number) => (b / 2 ** 20).toFixed(1);
  const rows = lat.rows();
  console.log(`node-diffusion load: ${CLIENTS} clients, ${wall.toFixed(1)} s against ${base} (${args.model})`);
  console.log(`requests: ${lat.total} (${(lat.total / wall).toFixed(1)}/s), video jobs completed: ${jobsCompleted} (${((jobsCompleted / wall) * 60).toFixed(1)}/min)`);
  console.log(`${'route'.padEnd(30)}${'n'.padStart(7)}${'p50 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'max ms'.padStart(10)}`);
  for (const r of rows) {
    console.log(`${r.route.padEnd(30)}${String(r.n).padStart(7)}${r.p50.toFixed(2).padStart(10)}${r.p99.toFixed(2).padStart(10)}${r.max.toFixed(2).padStart(10)}`);
  }
  console.log(`errors: ${errors.length}`);
  for (const e of errors.slice(0, 10)) console.log(`  ${e}`);
  console.log(`server RSS: ${mb(before.server)} MiB before, ${mb(after.server)} MiB after; worker RSS: ${mb(before.worker)} -> ${mb(after.worker)} MiB`);
  if (args.json) {
    await writeFile(args.json, JSON.stringify({ clients: CLIENTS, wallSeconds: wall, requests: lat.total, jobsCompleted, routes: rows, errors, rss: { before, after } }, null, 2));
  }
  process.exitCode = errors.length === 0 ? 0 : 1;
} finally {
  if (own) {
    own.child.kill('SIGTERM');
    await new Promise((r) => own.child.once('exit', r));
    await rm(own.dir, { recursive: true, force: true });
  }
}
