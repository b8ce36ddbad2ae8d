// A local Hugging Face hub for tests: the API endpoints the hub client calls (revision -> commit, paginated
// tree listing), /resolve/ URLs (regular files served directly, LFS files redirected to a CDN on another
// origin), Range support, and switches to misbehave: cut connections, corrupt bytes, ignore Range, fail.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance } from 'fastify';
import { rng } from './numeric.js';

export interface FakeFile {
  path: string;
  content: Buffer;
  /** stored in LFS (redirected to the CDN, listed with lfs.oid = sha256) */
  lfs: boolean;
}

export interface FakeRepo {
  id: string;
  commit: string;
  /** branch or tag -> commit (main -> commit is added) */
  refs?: Record<string, string>;
  files: FakeFile[];
  /** access needs `Authorization: Bearer <token>` */
  gatedToken?: string;
  /** sizes reported by the tree listing instead of the real ones */
  listedSize?: Record<string, number>;
}

export interface LoggedRequest {
  server: 'hub' | 'cdn';
  method: string;
  url: string;
  range: string | undefined;
  authorization: string | undefined;
}

export interface Misbehaviour {
  /** destroy the socket after this many body bytes, for the next `times` requests of the path */
  cutAfter?: { bytes: number; times: number; rangeStart?: number };
  /** flip one byte of the content */
  corrupt?: boolean;
  /** answer 200 with the whole file to ranged requests */
  ignoreRange?: boolean;
  /** answer the next `times` requests of the path with this status */
  fail?: { status: number; times: number };
}

const digests = new WeakMap<Buffer, Record<string, string>>();
function memo(b: Buffer, kind: string, compute: () => string): string {
  const d = digests.get(b) ?? {};
  digests.set(b, d);
  return (d[kind] ??= compute());
}
export const sha256 = (b: Buffer | string) =>
  typeof b === 'string' ? createHash('sha256').update(b).digest('hex') : memo(b, 'sha256', () => createHash('sha256').update(b).digest('hex'));
export const gitBlobId = (b: Buffer) =>
  memo(b, 'git', () => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex'));

/** A real safetensors file with one float32 tensor of n deterministic values. */
export function safetensorsBytes(n: number, seed: number): Buffer {
  const data = new Float32Array(n);
  const r = rng(seed);
  for (let i = 0; i < n; i++) data[i] = r() * 2 - 1;
  let header = JSON.stringify({
    __metadata__: { format: 'pt' },
    weight: { dtype: 'F32', shape: [n], data_offsets: [0, n * 4] },
  });
  header += ' '.repeat((8 - (header.length % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  return Buffer.concat([len, Buffer.from(header), Buffer.from(data.buffer)]);
}

export class FakeHub {
  readonly repos = new Map<string, FakeRepo>();
  readonly log: LoggedRequest[] = [];
  readonly misbehave = new Map<string, Misbehaviour>();
  /** the next `times` API requests whose URL contains `match` get HTTP `status` */
  failApi: { match: string; status: number; times: number } | null = null;
  treePageSize = 4;
  hubUrl = '';
  cdnUrl = '';
  // Transfers the client abandons on purpose leave keep-alive connections behind: close them all.
  private readonly hub: FastifyInstance = Fastify({ forceCloseConnections: true });
  private readonly cdn: FastifyInstance = Fastify({ forceCloseConnections: true });

  add(repo: FakeRepo): FakeRepo {
    this.repos.set(repo.id, { ...repo, refs: { main: repo.commit, ...repo.refs } });
    return repo;
  }

  requests(server?: 'hub' | 'cdn'): LoggedRequest[] {
    return server ? this.log.filter((r) => r.server === server) : this.log;
  }

  async start(): Promise<void> {
    for (const [name, app] of [['hub', this.hub], ['cdn', this.cdn]] as const) {
      app.addHook('onRequest', async (req) => {
        this.log.push({
          server: name,
          method: req.method,
          url: req.url,
          range: req.headers.range,
          authorization: req.headers.authorization,
        });
      });
    }
    this.routes();
    this.hubUrl = await this.hub.listen({ port: 0, host: '127.0.0.1' });
    this.cdnUrl = await this.cdn.listen({ port: 0, host: '127.0.0.1' });
  }

  async close(): Promise<void> {
    await this.hub.close();
    await this.cdn.close();
  }

  /** null when access is granted, else the error status and headers a real hub sends. */
  private denied(repoId: string, auth: string | undefined): { status: number; headers: Record<string, string> } | null {
    const repo = this.repos.get(repoId);
    if (!repo)
      return { status: 404, headers: { 'x-error-code': 'RepoNotFound', 'x-error-message': 'Repository not found' } };
    if (repo.gatedToken === undefined) return null;
    if (!auth)
      return {
        status: 401,
        headers: {
          'x-error-code': 'GatedRepo',
          'x-error-message': `Access to model ${repoId} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
        },
      };
    if (auth !== `Bearer ${repo.gatedToken}`)
      return {
        status: 403,
        headers: {
          'x-error-code': 'GatedRepo',
          'x-error-message': `Access to model ${repoId} is restricted and you are not in the authorized list. Visit https://huggingface.co/${repoId} to ask for access.`,
        },
      };
    return null;
  }

  private commitOf(repo: FakeRepo, rev: string): string | null {
    if (rev === repo.commit) return rev;
    return repo.refs?.[rev] ?? null;
  }

  private routes(): void {
    const hub = this.hub;
    hub.addHook('onRequest', async (req, reply) => {
      if (!req.url.startsWith('/api/') || !this.failApi || !req.url.includes(this.failApi.match)) return;
      if (this.failApi.times-- <= 0) return;
      return reply.code(this.failApi.status).send({ error: 'temporarily unavailable' });
    });

    hub.get('/api/models/:org/:name/revision/:rev', async (req, reply) => {
      const { org, name, rev } = req.params as Record<string, string>;
      const id = `${org}/${name}`;
      const denied = this.denied(id, req.headers.authorization);
      if (denied) return reply.code(denied.status).headers(denied.headers).send({ error: denied.headers['x-error-message'] });
      const repo = this.repos.get(id)!;
      const commit = this.commitOf(repo, rev);
      if (!commit)
        return reply
          .code(404)
          .headers({ 'x-error-code': 'RevisionNotFound', 'x-error-message': 'Invalid rev id' })
          .send({ error: `Invalid rev id: ${rev}` });
      return { _id: 'x', id, sha: commit, siblings: repo.files.map((f) => ({ rfilename: f.path })) };
    });

    hub.get('/api/models/:org/:name/tree/:rev', async (req, reply) => {
      const { org, name, rev } = req.params as Record<string, string>;
      const q = req.query as Record<string, string>;
      const id = `${org}/${name}`;
      const denied = this.denied(id, req.headers.authorization);
      if (denied) return reply.code(denied.status).headers(denied.headers).send({ error: denied.headers['x-error-message'] });
      const repo = this.repos.get(id)!;
      if (!this.commitOf(repo, rev))
        return reply.code(404).headers({ 'x-error-code': 'RevisionNotFound' }).send({ error: 'Invalid rev id' });
      if (q.recursive !== 'true') return reply.code(400).send({ error: 'this fake hub only serves recursive listings' });
      const dirs = new Set<string>();
      for (const f of repo.files) {
        const parts = f.path.split('/');
        for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
      }
      const entries = [
        ...[...dirs].map((d) => ({ type: 'directory', oid: sha256(d).slice(0, 40), size: 0, path: d })),
        ...repo.files.map((f) => {
          const size = repo.listedSize?.[f.path] ?? f.content.length;
          const pointer = `version https://git-lfs.github.com/spec/v1\noid sha256:${sha256(f.content)}\nsize ${size}\n`;
          return f.lfs
            ? { type: 'file', oid: gitBlobId(Buffer.from(pointer)), size, path: f.path, lfs: { oid: sha256(f.content), size, pointerSize: pointer.length } }
            : { type: 'file', oid: gitBlobId(f.content), size, path: f.path };
        }),
      ];
      const cursor = Number(q.cursor ?? 0);
      const page = entries.slice(cursor, cursor + this.treePageSize);
      if (cursor + this.treePageSize < entries.length) {
        const next = `${this.hubUrl}/api/models/${id}/tree/${rev}?recursive=true&expand=false&cursor=${cursor + this.treePageSize}`;
        reply.header('link', `<${next}>; rel="next"`);
      }
      return page;
    });

    hub.get('/:org/:name/resolve/:rev/*', async (req, reply) => {
      const { org, name, rev } = req.params as Record<string, string>;
      const path = (req.params as Record<string, string>)['*']!;
      const id = `${org}/${name}`;
      const denied = this.denied(id, req.headers.authorization);
      if (denied) return reply.code(denied.status).headers(denied.headers).send();
      const repo = this.repos.get(id)!;
      const commit = this.commitOf(repo, rev);
      if (!commit) return reply.code(404).headers({ 'x-error-code': 'RevisionNotFound' }).send();
      const file = repo.files.find((f) => f.path === path);
      if (!file) return reply.code(404).headers({ 'x-error-code': 'EntryNotFound', 'x-repo-commit': commit }).send();
      if (file.lfs) {
        return reply
          .code(302)
          .headers({
            location: `${this.cdnUrl}/blobs/${sha256(file.content)}?path=${encodeURIComponent(path)}`,
            'x-linked-etag': `"${sha256(file.content)}"`,
            'x-linked-size': String(file.content.length),
            'x-repo-commit': commit,
          })
          .send();
      }
      reply.hijack();
      this.serve(req.raw, reply.raw, file, { etag: `"${gitBlobId(file.content)}"`, 'x-repo-commit': commit });
    });

    this.cdn.get('/blobs/:sha', async (req, reply) => {
      const { sha } = req.params as Record<string, string>;
      const path = (req.query as Record<string, string>).path;
      const file = [...this.repos.values()].flatMap((r) => r.files).find((f) => f.lfs && f.path === path && sha256(f.content) === sha);
      if (!file) return reply.code(404).send();
      reply.hijack();
      this.serve(req.raw, reply.raw, file, { etag: `"${sha}"` });
    });
  }

  /** Serve a file with Range support and the configured misbehaviour. */
  private serve(req: IncomingMessage, res: ServerResponse, file: FakeFile, headers: Record<string, string>): void {
    const m = this.misbehave.get(file.path) ?? {};
    if (m.fail && m.fail.times > 0) {
      m.fail.times--;
      res.writeHead(m.fail.status, { 'content-type': 'text/plain' });
      res.end('refused');
      return;
    }
    let content = file.content;
    if (m.corrupt) {
      content = Buffer.from(content);
      content[content.length >> 1] ^= 0xff;
    }
    const size = content.length;
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && !m.ignoreRange) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start >= size) {
        res.writeHead(416, { 'content-range': `bytes */${size}` });
        res.end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
    const body = content.subarray(start, end + 1);
    res.writeHead(status, { ...headers, 'content-length': String(body.length), 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' });
    const cut = m.cutAfter;
    if (cut && cut.times > 0 && (cut.rangeStart === undefined || cut.rangeStart === start) && cut.bytes < body.length) {
      cut.times--;
      // Hand the first bytes to the kernel, then drop the connection mid-body.
      res.write(body.subarray(0, cut.bytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    res.end(body);
  }
}

/** A small diffusers repo: files the pipeline needs, and files the client must skip. */
export function fakePipelineRepo(id: string, commit: string): { repo: FakeRepo; needed: string[]; skipped: string[] } {
  const json = (o: unknown) => Buffer.from(JSON.stringify(o, null, 2));
  const text = (s: string) => Buffer.from(s);
  const needed: FakeFile[] = [
    {
      path: 'model_index.json',
      lfs: false,
      content: json({
        _class_name: 'ZImagePipeline',
        _diffusers_version: '0.36.0.dev0',
        scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
        text_encoder: ['transformers', 'Qwen3Model'],
        tokenizer: ['transformers', 'Qwen2Tokenizer'],
        transformer: ['diffusers', 'ZImageTransformer2DModel'],
        vae: ['diffusers', 'AutoencoderKL'],
        safety_checker: [null, null],
      }),
    },
    { path: 'scheduler/scheduler_config.json', lfs: false, content: json({ _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3.0 }) },
    { path: 'text_encoder/config.json', lfs: false, content: json({ architectures: ['Qwen3Model'], hidden_size: 8 }) },
    { path: 'text_encoder/model.safetensors', lfs: true, content: safetensorsBytes(10_000, 2) },
    { path: 'tokenizer/tokenizer.json', lfs: false, content: json({ version: '1.0', model: { type: 'BPE', vocab: { a: 0, b: 1 } } }) },
    { path: 'tokenizer/tokenizer_config.json', lfs: false, content: json({ model_max_length: 512 }) },
    { path: 'tokenizer/merges.txt', lfs: false, content: text('#version: 0.2\na b\n') },
    { path: 'transformer/config.json', lfs: false, content: json({ _class_name: 'ZImageTransformer2DModel', dim: 8 }) },
    { path: 'transformer/diffusion_pytorch_model.safetensors', lfs: true, content: safetensorsBytes(75_000, 1) },
    { path: 'vae/config.json', lfs: false, content: json({ _class_name: 'AutoencoderKL', latent_channels: 4 }) },
    { path: 'vae/diffusion_pytorch_model.safetensors', lfs: true, content: safetensorsBytes(5_000, 3) },
  ];
  const skipped: FakeFile[] = [
    { path: '.gitattributes', lfs: false, content: text('*.safetensors filter=lfs diff=lfs merge=lfs -text\n') },
    { path: 'README.md', lfs: false, content: text('# fake model\n') },
    { path: 'z_image_turbo.safetensors', lfs: true, content: safetensorsBytes(3_000, 4) },
    { path: 'assets/example.txt', lfs: false, content: text('not a component\n') },
    { path: 'transformer/diffusion_pytorch_model.bin', lfs: true, content: Buffer.from('pickle data of the same weights') },
    { path: 'transformer/diffusion_pytorch_model.fp16.safetensors', lfs: true, content: safetensorsBytes(2_000, 5) },
    { path: 'transformer/diffusion_pytorch_model.msgpack', lfs: true, content: Buffer.from('flax weights') },
    { path: 'text_encoder/flax_model.msgpack', lfs: true, content: Buffer.from('flax text encoder') },
    { path: 'text_encoder/tf_model.h5', lfs: true, content: Buffer.from('tensorflow text encoder') },
    { path: 'vae/diffusion_pytorch_model.onnx', lfs: true, content: Buffer.from('onnx vae') },
    { path: 'transformer/README.md', lfs: false, content: text('notes next to the weights\n') },
    { path: 'text_encoder/generation_config.json', lfs: false, content: json({ do_sample: true }) },
  ];
  return {
    repo: { id, commit, files: [...needed, ...skipped] },
    needed: needed.map((f) => f.path),
    skipped: skipped.map((f) => f.path),
  };
}
