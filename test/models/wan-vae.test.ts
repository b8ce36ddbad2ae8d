// AutoencoderKLWan (lib/models/wan/vae.ts): the golden wan21-t2v vae_decode / vae_encode checks,
// longer videos against diffusers (the cache's steady state), bounded memory of the chunked decode,
// and bad input.
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import '../../lib/check/all.js';
import { runCase } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors.js';
import { WanVae } from '../../lib/models/wan/vae.js';
import { relL2 } from '../helpers/numeric.js';

const fixtures = join(import.meta.dirname, '..', 'fixtures');
const golden = join(fixtures, 'golden', 'wan21-t2v');
const vaeDir = join(golden, 'model', 'vae');

t.test('golden wan21-t2v vae_decode and vae_encode pass within 1e-3', async (t) => {
  const result = await runCase(golden, { only: ['vae_decode', 'vae_encode'] });
  for (const check of result.checks) {
    for (const out of check.outputs) t.comment(`${check.name}.${out.output}: rel-L2 ${out.errors.map((e) => e.toExponential(2)).join(', ')}`);
    t.ok(check.pass, `${check.name}${check.reason ? `: ${check.reason}` : ''}`);
    t.ok(check.worstRelL2 !== null && check.worstRelL2 < 1e-3, `${check.name} worst rel-L2 ${check.worstRelL2}`);
  }
  t.equal(result.checks.length, 2);
});

t.test('longer videos match diffusers: 4 latent frames decoded to 13, 11 frames encoded in 3 chunks', async (t) => {
  const vae = await WanVae.load(vaeDir);
  const io = SafetensorsFile.open(join(fixtures, 'wan-vae', 'long.safetensors'));
  t.teardown(() => {
    io.dispose();
    vae.dispose();
  });
  E.scope(() => {
    const decoded: number[] = [];
    const sample = vae.decode(io.tensor('decode/latents'), { onFrame: (done, total) => decoded.push(done, total) });
    t.same(sample.shape, [1, 3, 13, 32, 48]);
    t.same(decoded, [1, 4, 2, 4, 3, 4, 4, 4], 'onFrame after every latent frame');
    const err = relL2(sample.toFloat32(), io.tensor('decode/sample').toFloat32());
    t.comment(`decode 4 latent frames: rel-L2 ${err.toExponential(2)}`);
    t.ok(err < 1e-3, `decode rel-L2 ${err}`);

    const { mean, logvar } = vae.encode(io.tensor('encode/video'));
    t.same(mean.shape, [1, 16, 3, 4, 6]);
    const errMean = relL2(mean.toFloat32(), io.tensor('encode/latent_mean').toFloat32());
    const errLogvar = relL2(logvar.toFloat32(), io.tensor('encode/latent_logvar').toFloat32());
    t.comment(`encode 11 frames: mean rel-L2 ${errMean.toExponential(2)}, logvar rel-L2 ${errLogvar.toExponential(2)}`);
    t.ok(errMean < 1e-3 && errLogvar < 1e-3);
  });
});

t.test('latent normalisation round-trips and matches the per-channel formula', async (t) => {
  const vae = await WanVae.load(vaeDir);
  t.teardown(() => vae.dispose());
  E.scope(() => {
    const x = E.randn([1, 16, 2, 3, 3], { seed: 5 });
    const n = vae.normalizeLatents(x);
    const xs = x.toFloat32();
    const ns = n.toFloat32();
    for (const i of [0, 17, 100, 287]) {
      const c = Math.floor(i / 18);
      t.ok(Math.abs((ns[i] as number) - ((xs[i] as number) - vae.latentsMean[c]!) / vae.latentsStd[c]!) < 1e-5);
    }
    t.ok(relL2(vae.denormalizeLatents(n).toFloat32(), xs) < 1e-6);
  });
});

t.test('chunked decode keeps memory bounded and frees every intermediate', async (t) => {
  const vae = await WanVae.load(vaeDir);
  t.teardown(() => vae.dispose());
  const outputBytes = (f: number) => 4 * 3 * vae.videoFrames(f) * 32 * 48;
  const measure = (frames: number) => {
    const z = E.randn([1, 16, frames, 4, 6], { seed: frames });
    const before = E.memoryStats();
    E.resetPeakMemory();
    const out = vae.decode(z);
    const peak = E.memoryStats().hostPeakBytes - before.hostBytes;
    t.same(out.shape, [1, 3, vae.videoFrames(frames), 32, 48]);
    out.dispose();
    z.dispose();
    const after = E.memoryStats();
    return { working: peak - outputBytes(frames), live: after.liveTensors, bytes: after.hostBytes };
  };
  const baseline = E.memoryStats();
  const short = measure(3);
  const long = measure(9); // 33 video frames
  t.comment(`working memory beyond the output: ${short.working} bytes for 3 latent frames, ${long.working} for 9`);
  t.ok(long.working <= short.working * 1.05 + 4096, 'peak beyond the output does not grow with the frame count');
  t.equal(long.live, baseline.liveTensors, 'live tensors back to the baseline');
  t.equal(long.bytes, baseline.hostBytes, 'host bytes back to the baseline');
});

t.test('bfloat16 weights give a close decode', async (t) => {
  const f32 = await WanVae.load(vaeDir);
  const bf16 = await WanVae.load(vaeDir, { dtype: 'bfloat16' });
  t.teardown(() => {
    f32.dispose();
    bf16.dispose();
  });
  E.scope(() => {
    const z = E.randn([1, 16, 2, 4, 6], { seed: 9 });
    const err = relL2(bf16.decode(z).toFloat32(), f32.decode(z).toFloat32());
    t.comment(`bf16 weights vs f32: rel-L2 ${err.toExponential(2)}`);
    t.ok(err < 2e-2);
  });
});

t.test('bad input is rejected with clear errors', async (t) => {
  const vae = await WanVae.load(vaeDir);
  E.scope(() => {
    t.throws(() => vae.decode(E.zeros([1, 8, 2, 4, 6])), /latents must be \[B, 16, F, h, w\].*got \[1,8,2,4,6\]/);
    t.throws(() => vae.decode(E.zeros([16, 2, 4, 6])), /latents must be \[B, 16, F, h, w\]/);
    t.throws(() => vae.decode(E.zeros([1, 16, 0, 4, 6])), /no empty dim/);
    t.throws(() => vae.encode(E.zeros([1, 4, 5, 32, 48])), /video must be \[B, 3, T, H, W\]/);
    t.throws(() => vae.normalizeLatents(E.zeros([1, 15, 1, 2, 2])), /normalizeLatents: latents must be/);
  });
  vae.dispose();
  t.throws(() => E.scope(() => vae.decode(E.zeros([1, 16, 1, 4, 6]))), /WanVae has been disposed/);

  const dir = mkdtempSync(join(tmpdir(), 'wan-vae-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = JSON.parse(readFileSync(join(vaeDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const writeConfig = (patch: Record<string, unknown>) => writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, ...patch }));
  const weights = SafetensorsFile.open(join(vaeDir, 'diffusion_pytorch_model.safetensors'));
  const writeWeights = (edit: (all: Record<string, E.Tensor>) => void) =>
    E.scope(() => {
      const all: Record<string, E.Tensor> = {};
      for (const name of weights.names()) all[name] = weights.tensor(name);
      edit(all);
      writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), all);
    });
  t.teardown(() => weights.dispose());
  const mapped = E.memoryStats().mappedBytes;
  copyFileSync(join(vaeDir, 'diffusion_pytorch_model.safetensors'), join(dir, 'diffusion_pytorch_model.safetensors'));

  writeConfig({ _class_name: 'AutoencoderKL' });
  await t.rejects(WanVae.load(dir), /_class_name is "AutoencoderKL", expected "AutoencoderKLWan"/);
  writeConfig({ is_residual: true });
  await t.rejects(WanVae.load(dir), /is_residual=true .* not supported/);
  writeConfig({ temperal_downsample: [false, true] });
  await t.rejects(WanVae.load(dir), /temperal_downsample has 2 entries; dim_mult=\[1,2,4,4\] needs 3/);
  writeConfig({ base_dim: 8 });
  await t.rejects(WanVae.load(dir), /weight 'encoder.conv_in.weight' has shape \[6, 3, 3, 3, 3\], the config needs \[8, 3, 3, 3, 3\]/);

  writeConfig({});
  writeWeights((all) => delete all['decoder.mid_block.attentions.0.proj.bias']);
  await t.rejects(WanVae.load(dir), /weight 'decoder.mid_block.attentions.0.proj.bias' \[24\] is missing/);
  writeWeights((all) => {
    all['decoder.extra.weight'] = E.zeros([2]);
  });
  await t.rejects(WanVae.load(dir), /holds 1 tensor\(s\) this config does not use: decoder.extra.weight/);
  writeWeights((all) => {
    all['quant_conv.bias'] = E.zeros([32], { dtype: 'int32' });
  });
  await t.rejects(WanVae.load(dir), /weight 'quant_conv.bias' is int32/);
  t.equal(E.memoryStats().mappedBytes, mapped, 'failed loads unmap their files');
});
