// Real servers on loopback for the API tests: in-process (createServer) or as a `serve` child process.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';

import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';

import { createServer } from '../../lib/server/app.js';
import type { ServerOptions } from '../../lib/server/options.js';

export const API_KEY = 'sk-test-node-diffusion';

export interface TestServer {
  app: FastifyInstance;
  url: string;
  client: OpenAI;
  outputPath: string;
  /** every log line the server wrote, parsed */
  logs: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** createServer on 127.0.0.1 with a random port, demo:wan and a fresh output folder unless given. */
export async function startServer(opts: Partial<ServerOptions> = {}): Promise<TestServer> {
  const outputPath = opts.outputPath ?? (await tempDir('nd-server-'));
  const logs: Array<Record<string, unknown>> = [];
  const logStream = new PassThrough();
  let pending = '';
  logStream.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    let nl: number;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
    }
  });
  const app = await createServer({ modelPath: 'demo:wan', device: 'cpu', logLevel: 'info', apiKey: null, ...opts, outputPath, logStream });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  const client = new OpenAI({ apiKey: opts.apiKey ?? API_KEY, baseURL: `${address}/v1`, maxRetries: 0, timeout: 120_000 });
  return {
    app,
    url: address,
    client,
    outputPath,
    logs,
    async close() {
      await app.close();
      if (!opts.outputPath) await rm(outputPath, { recursive: true, force: true });
    },
  };
}

export interface ServeProcess {
  child: ChildProcess;
  url: string;
  /** stdout lines (JSON logs) */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const MAIN = resolve(import.meta.dirname, '../../lib/cli/main.ts');
const spawned = new Set<ChildProcess>();

/** SIGKILLs every `serve` process spawnServe started that is still running (test teardown). */
export async function killSpawned(): Promise<void> {
  await Promise.all(
    [...spawned].map(
      (child) =>
        new Promise<void>((resolveExit) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolveExit();
          child.once('exit', () => resolveExit());
          child.kill('SIGKILL');
        }),
    ),
  );
}

/** `node-diffusion serve <args>` from the TypeScript sources, on a random port; resolves once it listens. */
export async function spawnServe(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<ServeProcess> {
  const script = `const m = await import(${JSON.stringify(MAIN)}); process.exitCode = await m.main(process.argv.slice(1));`;
  const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script, 'serve', '--port', '0', ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  spawned.add(child);
  child.once('exit', () => spawned.delete(child));
  const lines: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  const url = await new Promise<string>((resolveUrl, reject) => {
    let pending = '';
    child.stdout?.on('data', (b: Buffer) => {
      pending += b.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        lines.push(line);
        const m = /"address":"(http:\/\/[^"]+)"/.exec(line);
        if (m) resolveUrl(m[1] as string);
      }
    });
    void exited.then(({ code, signal }) => reject(new Error(`serve exited (${signal ?? code}) before listening:\n${stderr}`)));
  });
  return { child, url, lines, exited };
}

/** Polls until `check` returns a value (not undefined) or the time runs out. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** JSON request with fetch; returns status, headers and parsed body (or text). */
export async function http(
  url: string,
  init: RequestInit & { json?: unknown } = {},
): Promise<{ status: number; headers: Headers; body: any; bytes: Buffer }> {
  const headers = new Headers(init.headers);
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const res = await fetch(url, { ...init, headers, body });
  const bytes = Buffer.from(await res.arrayBuffer());
  let parsed: unknown = bytes.toString();
  if ((res.headers.get('content-type') ?? '').includes('json')) parsed = JSON.parse(bytes.toString());
  return { status: res.status, headers: res.headers, body: parsed, bytes };
}
