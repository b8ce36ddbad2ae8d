// LoRAs by Hugging Face repo id, against the local fake hub: the repo's adapter file lands in the shared
// hub cache (a second use makes no request), the manager merges it exactly as the local file, and
// repos without one clear adapter file, unknown repos and offline mode give clear errors.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { fetchLoraFromHub } from '../../lib/lora/hub.js';
import { LoraManager, weightsChecksum } from '../../lib/lora/manager.js';
import { LoraError } from '../../lib/lora/request.js';
import { WanTransformer3DModel } from '../../lib/models/wan/transformer.js';
import { FakeHub } from '../helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_ENDPOINT', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'])
  delete process.env[k];
const scratch = mkdtempSync(join(tmpdir(), 'nd-lora-hub-'));
process.env.HF_HOME = join(scratch, 'hf-home');
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden', 'wan21-t2v');
const LORA_FILE = join(GOLDEN, 'lora_kohya.safetensors');
const lora = readFileSync(LORA_FILE);

const hub = new FakeHub();
hub.add({
  id: 'acme/wan-style-lora',
  commit: '1'.repeat(40),
  files: [
    { path: 'README.md', lfs: false, content: Buffer.from('# a style\n') },
    { path: 'pytorch_lora_weights.safetensors', lfs: true, content: lora },
    { path: 'checkpoints/step-500.safetensors', lfs: true, content: lora },
  ],
});
hub.add({ id: 'acme/single-file', commit: '2'.repeat(40), files: [{ path: 'my_style_v2.safetensors', lfs: true, content: lora }] });
hub.add({
  id: 'acme/two-files',
  commit: '3'.repeat(40),
  files: [
    { path: 'style_a.safetensors', lfs: true, content: lora },
    { path: 'style_b.safetensors', lfs: true, content: lora },
  ],
});
t.before(() => hub.start());
t.teardown(() => hub.close());

t.test('the adapter file of a repo, cached like huggingface_hub caches it', async (tt) => {
  const cacheDir = join(scratch, 'cache-1');
  const path = await fetchLoraFromHub('acme/wan-style-lora', { endpoint: hub.hubUrl, cacheDir });
  tt.equal(path, join(cacheDir, 'models--acme--wan-style-lora', 'snapshots', '1'.repeat(40), 'pytorch_lora_weights.safetensors'));
  tt.same(readFileSync(path), lora, 'the bytes of the repo file');
  const requests = hub.log.length;
  tt.equal(await fetchLoraFromHub('acme/wan-style-lora', { endpoint: hub.hubUrl, cacheDir }), path);
  tt.equal(hub.log.length, requests, 'a cached adapter costs no request');
  tt.equal(await fetchLoraFromHub('acme/wan-style-lora', { endpoint: 'http://127.0.0.1:9', cacheDir, offline: true }), path, 'and works offline');
  const single = await fetchLoraFromHub('acme/single-file', { endpoint: hub.hubUrl, cacheDir });
  tt.match(single, /my_style_v2\.safetensors$/, 'the only .safetensors file of a repo');
});

t.test('errors: ambiguous repo, unknown repo, offline without a cache', async (tt) => {
  const cacheDir = join(scratch, 'cache-2');
  const fails = async (p: Promise<unknown>, msg: RegExp, what: string) => {
    const err = await p.then(
      () => null,
      (e: unknown) => e,
    );
    tt.ok(err instanceof LoraError, `${what}: LoraError`);
    tt.match((err as Error).message, msg, `${what}: ${(err as Error).message}`);
  };
  await fails(fetchLoraFromHub('acme/two-files', { endpoint: hub.hubUrl, cacheDir }), /has 2 \.safetensors files \(style_a\.safetensors, style_b\.safetensors\)/, 'two files');
  await fails(fetchLoraFromHub('acme/nope', { endpoint: hub.hubUrl, cacheDir }), /cannot download the LoRA acme\/nope/, 'unknown repo');
  await fails(fetchLoraFromHub('acme/wan-style-lora', { endpoint: hub.hubUrl, cacheDir, offline: true }), /offline mode is on/, 'offline');
});

t.test('set_lora with a repo id merges what the local file merges', async (tt) => {
  const cacheDir = join(scratch, 'cache-3');
  const dir = join(GOLDEN, 'model', 'transformer');
  const viaHub = await WanTransformer3DModel.load(dir);
  const local = await WanTransformer3DModel.load(dir);
  const a = new LoraManager({ transformer: viaHub }, { hub: { endpoint: hub.hubUrl, cacheDir } });
  const b = new LoraManager({ transformer: local });
  tt.teardown(() => {
    a.dispose();
    b.dispose();
    viaHub.dispose();
    local.dispose();
  });
  await a.setLora({ lora_nickname: 'style', lora_path: 'acme/wan-style-lora', strength: 0.8 });
  await b.setLora({ lora_nickname: 'style', lora_path: LORA_FILE, strength: 0.8 });
  tt.equal(weightsChecksum(viaHub), weightsChecksum(local));
  tt.same(a.list().loaded_adapters, [{ nickname: 'style', path: 'acme/wan-style-lora' }]);
  await tt.rejects(a.setLora({ lora_nickname: 'x', lora_path: 'not a/repo id!' }), /is not an existing file or folder, nor a Hugging Face repo id/);
});
