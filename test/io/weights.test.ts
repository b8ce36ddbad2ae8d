// Component weight sets: the sharded golden Wan transformer through its index, index/shard
// mismatches, plain folders, and the no-copy guarantee.
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors.js';
import { openWeightFile, openWeights, WeightsError } from '../../lib/io/weights.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const WAN_TRANSFORMER = join(GOLDEN, 'wan21-t2v', 'model', 'transformer');
const SHARD1 = 'diffusion_pytorch_model-00001-of-00002.safetensors';
const SHARD2 = 'diffusion_pytorch_model-00002-of-00002.safetensors';
const INDEX = 'diffusion_pytorch_model.safetensors.index.json';

const tmp = mkdtempSync(join(tmpdir(), 'nd-weights-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

function copyTransformer(name: string): string {
  const d = join(tmp, name);
  cpSync(WAN_TRANSFORMER, d, { recursive: true });
  return d;
}

function editIndex(d: string, edit: (map: Record<string, string>) => void): void {
  const index = JSON.parse(readFileSync(join(d, INDEX), 'utf8')) as { weight_map: Record<string, string> };
  edit(index.weight_map);
  writeFileSync(join(d, INDEX), JSON.stringify(index));
}

async function rejects(tt: Parameters<Parameters<typeof t.test>[0]>[0], p: Promise<unknown>, pattern: RegExp) {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  tt.ok(caught instanceof WeightsError, 'a WeightsError');
  tt.match((caught as Error).message, pattern);
}

t.test('the sharded golden Wan transformer opens through its index, without copying', async (tt) => {
  const index = JSON.parse(readFileSync(join(WAN_TRANSFORMER, INDEX), 'utf8')) as { weight_map: Record<string, string> };
  const before = E.memoryStats();
  const w = await openWeights(WAN_TRANSFORMER);
  tt.same(new Set(w.names()), new Set(Object.keys(index.weight_map)), 'exactly the tensors of the index');
  tt.equal(w.files.length, 2);
  const shardBytes = statSync(join(WAN_TRANSFORMER, SHARD1)).size + statSync(join(WAN_TRANSFORMER, SHARD2)).size;

  const shardFiles: Record<string, SafetensorsFile> = { [SHARD1]: SafetensorsFile.open(join(WAN_TRANSFORMER, SHARD1)), [SHARD2]: SafetensorsFile.open(join(WAN_TRANSFORMER, SHARD2)) };
  const afterOpen = E.memoryStats();
  for (const [name, shard] of Object.entries(index.weight_map)) {
    const got = w.get(name);
    tt.equal(w.fileOf(name).path, join(WAN_TRANSFORMER, shard), `${name} from ${shard}`);
    const ref = shardFiles[shard]!.tensor(name);
    tt.same(got.shape, ref.shape);
    tt.equal(got.dtype, 'float32');
    tt.ok(Buffer.from(got.bytes()).equals(Buffer.from(ref.bytes())), `${name} bytes`);
    tt.equal(E.storageInfo(got).kind, 'mapped');
    ref.dispose();
  }
  const afterGet = E.memoryStats();
  tt.equal(afterGet.mappedBytes - before.mappedBytes, 2 * shardBytes, 'the weight set and the reference files map each shard once');
  tt.equal(afterGet.hostBytes, afterOpen.hostBytes, 'get() allocates no host memory');
  for (const f of Object.values(shardFiles)) f.dispose();

  const name = w.names()[0]!;
  tt.equal(w.get(name), w.get(name), 'the same handle on every call');
  const inScope = E.scope(() => w.get(w.names()[1]!));
  tt.notOk(inScope.disposed, 'scopes do not free weight views');
  tt.same(w.metadata, { format: 'pt' });
  tt.equal(w.totalBytes(), Object.keys(index.weight_map).reduce((n, k) => n + w.info(k).byteLength, 0));
  tt.ok(w.has(name));
  tt.notOk(w.has('no.such.weight'));
  tt.throws(() => w.get('no.such.weight'), /no tensor 'no.such.weight' in 2 files/);

  w.dispose();
  tt.equal(E.memoryStats().mappedBytes, before.mappedBytes, 'dispose() unmaps everything');
  tt.ok(inScope.disposed, 'views are released by dispose()');
  tt.throws(() => w.get(name), /were disposed/);
});

t.test('bfloat16 weights stay bfloat16', async (tt) => {
  const w = await openWeights(join(GOLDEN, 'zimage-turbo', 'model', 'text_encoder'));
  tt.equal(w.get('embed_tokens.weight').dtype, 'bfloat16');
  tt.same(w.info('embed_tokens.weight').shape, [151936, 12]);
  w.dispose();
});

t.test('index problems name the shard and the tensor', async (tt) => {
  const missing = copyTransformer('missing-shard');
  rmSync(join(missing, SHARD2));
  await rejects(tt, openWeights(missing), new RegExp(`shard ${SHARD2} \\(holding '[^']+' and \\d+ more\\) is missing`));

  const extra = copyTransformer('extra-name');
  editIndex(extra, (m) => {
    m['blocks.9.attn1.to_q.weight'] = SHARD1;
  });
  await rejects(tt, openWeights(extra), new RegExp(`tensor 'blocks.9.attn1.to_q.weight' is assigned to ${SHARD1}, but that shard does not contain it`));

  const unlisted = copyTransformer('unlisted');
  let dropped = '';
  editIndex(unlisted, (m) => {
    dropped = Object.keys(m).find((k) => m[k] === SHARD2)!;
    delete m[dropped];
  });
  await rejects(tt, openWeights(unlisted), new RegExp(`shard ${SHARD2} holds tensor '${dropped.replace(/\./g, '\\.')}' that the index does not assign to it`));

  const escape = copyTransformer('escape');
  editIndex(escape, (m) => {
    m[Object.keys(m)[0]!] = '../other.safetensors';
  });
  await rejects(tt, openWeights(escape), /shard '..\/other.safetensors' must be a file name inside the folder/);

  const badJson = copyTransformer('bad-json');
  writeFileSync(join(badJson, INDEX), '{"weight_map": ');
  await rejects(tt, openWeights(badJson), /cannot read the index/);

  const noMap = copyTransformer('no-map');
  writeFileSync(join(noMap, INDEX), '{"metadata": {}}');
  await rejects(tt, openWeights(noMap), /'weight_map' must be an object/);

  const before = E.memoryStats().mappedBytes;
  await rejects(tt, openWeights(extra), /does not contain it/);
  tt.equal(E.memoryStats().mappedBytes, before, 'a failed open leaves nothing mapped');
});

t.test('folders without an index: one file, several files, duplicates, nothing usable', async (tt) => {
  const vae = await openWeights(join(GOLDEN, 'flux2-klein', 'model', 'vae'));
  tt.equal(vae.files.length, 1);
  tt.equal(vae.get('bn.num_batches_tracked').dtype, 'int64');
  vae.dispose();

  const multi = join(tmp, 'multi');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'transformer'), multi, { recursive: true });
  rmSync(join(multi, INDEX));
  const w = await openWeights(multi);
  tt.equal(w.files.length, 2, 'every .safetensors file when there is no index');
  const index = JSON.parse(readFileSync(join(WAN_TRANSFORMER, INDEX), 'utf8')) as { weight_map: Record<string, string> };
  tt.same(new Set(w.names()), new Set(Object.keys(index.weight_map)), 'the union of the files');
  w.dispose();

  const dup = join(tmp, 'dup');
  cpSync(multi, dup, { recursive: true });
  cpSync(join(dup, SHARD1), join(dup, 'copy.safetensors'));
  await rejects(tt, openWeights(dup), /is stored twice: in .*copy\.safetensors and in .*00001-of-00002/);

  const variant = join(tmp, 'variant');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'vae'), variant, { recursive: true });
  cpSync(join(variant, 'diffusion_pytorch_model.safetensors'), join(variant, 'diffusion_pytorch_model.fp16.safetensors'));
  const v = await openWeights(variant);
  tt.same(v.files.map((f) => f.path), [join(variant, 'diffusion_pytorch_model.safetensors')], 'the standard file wins over variants');
  v.dispose();

  const bin = join(tmp, 'bin');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model', 'scheduler'), bin, { recursive: true });
  writeFileSync(join(bin, 'pytorch_model.bin'), 'x');
  await rejects(tt, openWeights(bin), /no \.safetensors weights in .*found pytorch_model\.bin: only safetensors weights are supported/);
  await rejects(tt, openWeights(join(tmp, 'nowhere')), /cannot read the weights folder/);
  await rejects(tt, openWeights(join(GOLDEN, 'wan21-t2v', 'case.json')), /is not a folder/);
});

t.test('openWeightFile opens a single file (e.g. a LoRA) with its metadata', async (tt) => {
  const w = await openWeightFile(join(GOLDEN, 'wan21-t2v', 'lora_peft.safetensors'));
  tt.ok(w.metadata.lora_adapter_metadata!.includes('transformer.r'));
  tt.ok(w.names().every((n) => n.startsWith('transformer.')));
  w.dispose();

  const out = join(tmp, 'small.safetensors');
  writeSafetensors(out, { a: E.tensor([1, 2], [2]) });
  const s = await openWeightFile(out);
  tt.same(s.get('a').toArray(), [1, 2]);
  s.dispose();
});
