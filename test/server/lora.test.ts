// LoRA management over HTTP against real servers: demo:zimage through the openai SDK (set A, generate,
// unmerge, set B, generate: each output differs from the base and equals the same LoRA merged directly
// into an in-process pipeline), exact unmerge by /get_weights_checksum, cache reuse with the file
// deleted, failed loads answered 400 with the offending key and nothing changed, job ordering (a
// request queued before set_lora runs on the old weights), the state surviving a worker crash; and
// demo:wan with a startup --lora-path in the original Wan naming.
import { copyFileSync, mkdtempSync, rmSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { LoraManager, pipelineLoraTargets, weightsChecksum } from '../../lib/lora/manager.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import type { Pipeline } from '../../lib/pipelines/types.js';
import { http, startServer, waitFor } from '../helpers/server.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const tmp = mkdtempSync(join(tmpdir(), 'nd-lora-api-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

/** A LoRA file with seeded weights for the given module -> [out, in] map, in PEFT or kohya naming. */
function writeLora(file: string, modules: Record<string, number[]>, style: 'peft' | 'kohya', seed: number): string {
  const tensors: Record<string, E.Tensor> = {};
  let s = seed;
  for (const [m, [out, inp]] of Object.entries(modules)) {
    const down = E.mul(E.randn([4, inp!], { seed: s++ }), 0.5);
    const up = E.mul(E.randn([out!, 4], { seed: s++ }), 0.5);
    if (style === 'peft') {
      tensors[`transformer.${m}.lora_A.weight`] = down;
      tensors[`transformer.${m}.lora_B.weight`] = up;
    } else {
      const k = m.startsWith('blocks.') ? `diffusion_model.${m}` : `lora_unet_${m.replace(/\./g, '_')}`;
      tensors[`${k}.lora_down.weight`] = down.to('bfloat16');
      tensors[`${k}.lora_up.weight`] = up.to('bfloat16');
      tensors[`${k}.alpha`] = E.tensor([2], []);
    }
  }
  const path = join(tmp, file);
  writeSafetensors(path, tensors, style === 'peft' ? { lora_adapter_metadata: JSON.stringify({ 'transformer.r': 4, 'transformer.lora_alpha': 8 }) } : {});
  E.disposeAll(tensors);
  return path;
}

async function pixels(b64: string): Promise<Buffer> {
  return sharp(Buffer.from(b64, 'base64')).removeAlpha().raw().toBuffer();
}

function rgb(p: Pipeline, result: Awaited<ReturnType<Pipeline['generate']>>): Buffer {
  void p;
  return Buffer.from(result.outputs[0]![0]!.data);
}

t.test('demo:zimage: the upstream switching sequence, exactness, cache, failures, ordering, restart', async (t) => {
  // the same model in-process, to merge the LoRAs directly and generate the expected outputs
  const local = await loadPipeline('demo:zimage', { device: 'cpu' });
  const localLora = new LoraManager(pipelineLoraTargets(local));
  t.teardown(() => {
    localLora.dispose();
    local.dispose();
  });
  const dit = pipelineLoraTargets(local).transformer!;
  const shape = (m: string) => dit.parameter(`${m}.weight`).shape;
  const pathA = writeLora('a.safetensors', {
    'layers.0.attention.to_q': shape('layers.0.attention.to_q'),
    'layers.1.feed_forward.w2': shape('layers.1.feed_forward.w2'),
    'noise_refiner.0.attention.to_v': shape('noise_refiner.0.attention.to_v'),
  }, 'peft', 10);
  const pathB = writeLora('b.safetensors', {
    'layers.0.feed_forward.w1': shape('layers.0.feed_forward.w1'),
    'context_refiner.0.attention.to_out.0': shape('context_refiner.0.attention.to_out.0'),
    'layers.1.adaLN_modulation.0': shape('layers.1.adaLN_modulation.0'),
  }, 'kohya', 20);

  const server = await startServer({ modelPath: 'demo:zimage' });
  t.teardown(() => server.close());
  const { client, url } = server;
  const REQ = { prompt: 'a lighthouse at dusk', size: '64x48', num_inference_steps: 2, seed: 7 } as const;
  const generate = async () => pixels((await client.images.generate(REQ as never)).data![0]!.b64_json!);
  const localGenerate = async () =>
    rgb(local, await local.generate(local.validate({ prompt: REQ.prompt, width: 64, height: 48, numInferenceSteps: 2, seed: 7 })));
  const post = (path: string, json?: unknown) => http(`${url}${path}`, { method: 'POST', ...(json === undefined ? {} : { json }) });
  const checksum = async () => (await post('/get_weights_checksum', {})).body.transformer as string;
  const list = async () => (await http(`${url}/v1/list_loras`)).body;

  const base = await generate();
  t.same(base, await localGenerate(), 'the server and the in-process pipeline agree on the base output');
  const baseSum = await checksum();
  t.equal(baseSum, weightsChecksum(dit), 'the checksum is the in-process model\'s');
  t.same(await list(), { loaded_adapters: [], active: {} });

  // 1. set A, generate
  let r = await post('/v1/set_lora', { lora_nickname: 'a', lora_path: pathA, strength: 0.8 });
  t.equal(r.status, 200);
  t.same(r.body, { status: 'ok', message: 'Successfully set LoRA adapter(s): a (target: all, strength: 0.80)' });
  const imgA = await generate();
  const sumA = await checksum();
  t.not(sumA, baseSum);
  t.notSame(imgA, base, 'A changes the output');
  await localLora.setLora({ lora_nickname: 'a', lora_path: pathA, strength: 0.8 });
  t.equal(weightsChecksum(dit), sumA, 'the served weights equal A merged directly');
  t.same(imgA, await localGenerate(), 'the output with A equals the directly merged pipeline\'s');

  // 2. unmerge (no body, as the upstream example)
  r = await post('/v1/unmerge_lora_weights');
  t.same(r.body, { status: 'ok', message: 'Successfully unmerged LoRA weights (target: all)' });
  t.equal(await checksum(), baseSum, 'unmerge restores the checksum exactly');
  t.same(await generate(), base, 'and the base output');
  t.same((await list()).active, { transformer: [{ nickname: 'a', path: pathA, merged: false, strength: 0.8 }] });

  // 3. set B (kohya names, bf16), generate
  r = await post('/v1/set_lora', { lora_nickname: 'b', lora_path: pathB, strength: 1.2 });
  t.equal(r.status, 200);
  const imgB = await generate();
  t.notSame(imgB, base, 'B changes the output');
  t.notSame(imgB, imgA, 'B differs from A');
  await localLora.setLora({ lora_nickname: 'b', lora_path: pathB, strength: 1.2 });
  t.equal(await checksum(), weightsChecksum(dit), 'B as merged directly');
  t.same(imgB, await localGenerate(), 'the output with B equals the directly merged pipeline\'s');
  const sumB = await checksum();
  t.same(await list(), {
    loaded_adapters: [{ nickname: 'a', path: pathA }, { nickname: 'b', path: pathB }],
    active: { transformer: [{ nickname: 'b', path: pathB, merged: true, strength: 1.2 }] },
  });

  // 4. back to A from the cache, with its file gone; then both at once, curl-style (no JSON content type)
  copyFileSync(pathA, `${pathA}.kept`);
  rmSync(pathA);
  r = await post('/v1/set_lora', { lora_nickname: 'a', lora_path: pathA, strength: 0.8 });
  t.equal(r.status, 200, 'A -> B -> A: served from memory (its file was deleted)');
  t.equal(await checksum(), sumA, 'exactly the first A merge');
  const raw = await fetch(`${url}/v1/set_lora`, { method: 'POST', body: JSON.stringify({ lora_nickname: ['a', 'b'], strength: [0.8, 1.2] }) });
  t.equal(raw.status, 200, 'a JSON body without a JSON content type (curl -d)');
  await localLora.setLora({ lora_nickname: ['a', 'b'], strength: [0.8, 1.2] });
  t.equal(await checksum(), weightsChecksum(dit), 'two adapters on the same module, merged in order');
  r = await post('/v1/merge_lora_weights', { strength: 1 });
  t.same(r.body, { status: 'ok', message: 'Successfully merged LoRA weights (target: all, strength: 1.0)' });
  t.same((await list()).active.transformer.map((x: { strength: number }) => x.strength), [1, 1]);
  r = await post('/v1/set_lora', { lora_nickname: 'b', strength: 1.2 });
  t.equal(await checksum(), sumB);

  // 5. failures: 400 with the reason and the key, nothing changes
  const before = JSON.stringify(await list());
  const corrupt = join(tmp, 'corrupt.safetensors');
  copyFileSync(pathB, corrupt);
  truncateSync(corrupt, 100);
  const wider = writeLora('wider.safetensors', { 'layers.0.attention.to_q': [96, 96] }, 'kohya', 40);
  const failures: Array<[string, unknown, RegExp]> = [
    ['truncated file', { lora_nickname: 'c', lora_path: corrupt }, /Failed to set LoRA adapter: LoRA 'c': .*not a readable safetensors file/],
    ["Wan's LoRA", { lora_nickname: 'c', lora_path: join(GOLDEN, 'wan21-t2v', 'lora_peft.safetensors') }, /key 'transformer\.blocks\.0\.attn1\.to_q\.lora_A\.weight' names the layer 'blocks\.0\.attn1\.to_q', which ZImageTransformer2DModel does not have/],
    ['a LoRA for a wider model', { lora_nickname: 'c', lora_path: wider }, /key 'lora_unet_layers_0_attention_to_q\.lora_down\.weight' has shape \[4, 96\], but layers\.0\.attention\.to_q takes 64 inputs/],
    ['missing file', { lora_nickname: 'c', lora_path: join(tmp, 'absent.safetensors') }, /not an existing file or folder/],
    ['uncached nickname', { lora_nickname: 'zzz' }, /LoRA adapter 'zzz' is not loaded: give its lora_path/],
    ['target the model lacks', { lora_nickname: 'b', target: 'transformer_2' }, /target 'transformer_2' is not a module of this model/],
    ['unknown target', { lora_nickname: 'b', target: 'unet' }, /target must be one of all, transformer, transformer_2, critic/],
    ['list lengths', { lora_nickname: ['a', 'b'], strength: [1, 1, 1] }, /lora_nickname has 2 entries but strength has 3/],
    ['no nickname', { lora_path: pathB }, /'lora_nickname'/],
    ['unknown field', { lora_nickname: 'b', scale: 1 }, /Unrecognized request argument supplied: scale/],
  ];
  for (const [what, body, msg] of failures) {
    const res = await post('/v1/set_lora', body);
    t.equal(res.status, 400, `${what}: 400`);
    t.equal(res.body.error?.type, 'invalid_request_error', `${what}: OpenAI error shape`);
    t.match(res.body.error?.message, msg, `${what}: ${res.body.error?.message}`);
    t.equal(await checksum(), sumB, `${what}: weights unchanged`);
    t.equal(JSON.stringify(await list()), before, `${what}: adapters and active set unchanged`);
  }
  t.equal((await post('/v1/merge_lora_weights', { target: 'critic' })).status, 400);
  t.equal((await post('/get_weights_checksum', { module_names: ['transformer', 'vae'] })).body.vae, 'not_found');

  // 6. ordering: a request queued before set_lora runs entirely on the weights it was queued with
  const started = server.logs.filter((l) => l.msg === 'job started').length;
  const pending = client.images.generate({ ...REQ, prompt: 'ordering check' } as never);
  await waitFor('the job to start', () => (server.logs.filter((l) => l.msg === 'job started').length > started ? true : undefined));
  const [job, set] = await Promise.all([pending, post('/v1/set_lora', { lora_nickname: 'a', strength: 0.8 })]);
  t.equal(set.status, 200);
  await localLora.setLora({ lora_nickname: 'b', strength: 1.2 });
  const expectedWithB = rgb(local, await local.generate(local.validate({ prompt: 'ordering check', width: 64, height: 48, numInferenceSteps: 2, seed: 7 })));
  t.same(await pixels(job.data![0]!.b64_json!), expectedWithB, 'the running job was not touched: it ran with B throughout');
  t.equal(await checksum(), sumA, 'then A was set');

  // 7. the worker dies: the restarted worker reads the active adapters again and merges them before serving
  copyFileSync(`${pathA}.kept`, pathA);
  const pid = server.app.runtime.workerPid!;
  process.kill(pid, 'SIGKILL');
  await waitFor('a new worker', () => (server.app.runtime.ready && server.app.runtime.workerPid !== pid ? true : undefined), 120_000);
  t.equal(await checksum(), sumA, 'the merged weights are back after the restart');
  t.same((await list()).active, { transformer: [{ nickname: 'a', path: pathA, merged: true, strength: 0.8 }] });
  t.same(await generate(), imgA, 'and so is the output with A');
  t.ok(server.logs.some((l) => l.msg === 'restored the weight state in the new worker'), 'logged');
});

t.test('demo:wan: a startup LoRA in the original Wan naming; a bad one stops the server from starting', async (t) => {
  const local = await loadPipeline('demo:wan', { device: 'cpu' });
  const lora = new LoraManager(pipelineLoraTargets(local));
  t.teardown(() => {
    lora.dispose();
    local.dispose();
  });
  const dit = pipelineLoraTargets(local).transformer!;
  const shape = (m: string) => dit.parameter(`${m}.weight`).shape;
  // original names: blocks.N.self_attn.q -> attn1.to_q, cross_attn.o -> attn2.to_out.0, ffn.0 -> ffn.net.0.proj
  const file = writeLora('wan-original.safetensors', {
    'blocks.0.self_attn.q': shape('blocks.0.attn1.to_q'),
    'blocks.1.cross_attn.o': shape('blocks.1.attn2.to_out.0'),
    'blocks.0.ffn.0': shape('blocks.0.ffn.net.0.proj'),
  }, 'kohya', 30);
  await lora.setLora({ lora_nickname: 'style', lora_path: file, strength: 0.6 });
  const expected = weightsChecksum(dit);

  const server = await startServer({ modelPath: 'demo:wan', loraPath: file, loraNickname: 'style', loraScale: 0.6 });
  t.teardown(() => server.close());
  const sums = await http(`${server.url}/get_weights_checksum`, { method: 'POST' });
  t.same(sums.body, { transformer: expected }, 'the startup LoRA is merged as the library merges it');
  t.same((await http(`${server.url}/v1/list_loras`)).body, {
    loaded_adapters: [{ nickname: 'style', path: file }],
    active: { transformer: [{ nickname: 'style', path: file, merged: true, strength: 0.6 }] },
  });
  await t.rejects(startServer({ modelPath: 'demo:wan', loraPath: join(GOLDEN, 'zimage-turbo', 'lora_peft.safetensors') }), /could not load model 'demo:wan': LoRA 'default'.*does not have/);
});
