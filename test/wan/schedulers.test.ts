// Flow UniPC (Wan) and flow-match Euler (Z-Image, FLUX.2) against the golden reference tables and
// stepping, closed-form cases, unsupported configurations and memory hygiene.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { SafetensorsFile } from '../../lib/io/safetensors.js';
import { calculateShift, FlowMatchEulerDiscreteScheduler } from '../../lib/schedulers/flow-match-euler.js';
import { UniPCMultistepScheduler } from '../../lib/schedulers/unipc.js';
import { randomArray, relL2 } from '../helpers/numeric.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');

function schedulerJson(c: string): Record<string, unknown> {
  return JSON.parse(readFileSync(join(GOLDEN, c, 'model', 'scheduler', 'scheduler_config.json'), 'utf8')) as Record<string, unknown>;
}
const unipc = (raw: Record<string, unknown>) => new UniPCMultistepScheduler(parseComponentConfig('UniPCMultistepScheduler', raw, 'test'));
const euler = (raw: Record<string, unknown>) => new FlowMatchEulerDiscreteScheduler(parseComponentConfig('FlowMatchEulerDiscreteScheduler', raw, 'test'));

function io(c: string): SafetensorsFile {
  return SafetensorsFile.open(join(GOLDEN, c, 'io.safetensors'));
}
function values(f: SafetensorsFile, key: string): number[] {
  const x = f.tensor(key);
  try {
    return x.toArray();
  } finally {
    x.dispose();
  }
}

/** Steps a scheduler through stored model outputs; returns each intermediate sample as numbers. */
function stepThrough(s: { timesteps: number[]; step(m: E.Tensor, t: number, x: E.Tensor): E.Tensor }, f: SafetensorsFile, prefix: string): number[][] {
  return E.scope(() => {
    const outputs = f.tensor(`${prefix}/model_outputs`);
    let x = f.tensor(`${prefix}/initial_sample`);
    return s.timesteps.map((t, i) => {
      x = s.step(outputs.select(0, i), t, x);
      return Array.from(x.toFloat32());
    });
  });
}

t.test('UniPC set_timesteps reproduces the reference tables (exact timesteps, float32 sigmas)', async (tt) => {
  const f = io('wan21-t2v');
  t.teardown(() => f.dispose());
  const base = schedulerJson('wan21-t2v');
  for (const [n, shift, key] of [[3, 3, '3'], [4, 3, '4'], [10, 3, '10'], [50, 3, '50'], [4, 5, '4_shift5']] as const) {
    const s = unipc({ ...base, flow_shift: shift });
    s.setTimesteps(n);
    tt.same(s.timesteps, values(f, `scheduler/timesteps_${key}`), `timesteps n=${n} shift=${shift}`);
    const err = relL2(s.sigmas, values(f, `scheduler/sigmas_${key}`));
    tt.ok(err <= 1e-7, `sigmas n=${n} shift=${shift}: rel-L2 ${err}`);
    tt.ok(s.sigmas[0]! < 1 && s.sigmas[0]! > 1 - 2e-6, 'a first sigma of 1 is pulled below 1');
  }
});

t.test('UniPC multistep predictor-corrector matches the reference samples step by step', async (tt) => {
  const f = io('wan21-t2v');
  t.teardown(() => f.dispose());
  const s = unipc(schedulerJson('wan21-t2v'));
  s.setTimesteps(4);
  tt.same(s.timesteps, values(f, 'scheduler_step/timesteps'));
  const ref = values(f, 'scheduler_step/samples');
  const got = stepThrough(s, f, 'scheduler_step');
  const per = ref.length / got.length;
  got.forEach((x, i) => {
    const err = relL2(x, ref.slice(i * per, (i + 1) * per));
    tt.ok(err < 1e-6, `sample after step ${i}: rel-L2 ${err}`);
  });
  s.dispose();
});

t.test('UniPC: one step lands on the x0 prediction; the step index starts by timestep lookup or begin index', async (tt) => {
  const base = schedulerJson('wan21-t2v');
  const n = 2 * 3 * 5;
  const xv = randomArray(n, 1);
  const vv = randomArray(n, 2);
  const s = unipc(base);
  s.setTimesteps(1);
  const out = E.scope(() => s.step(E.tensor(Float32Array.from(vv), [2, 3, 5]), s.timesteps[0]!, E.tensor(Float32Array.from(xv), [2, 3, 5])).toArray());
  const sigma = s.sigmas[0]!;
  tt.ok(relL2(out, Array.from(xv, (x, i) => x - sigma * vv[i]!)) < 1e-6, 'final sigma 0, order 1: x = sample - sigma * v');

  // without a begin index the first step looks the timestep up; an unknown timestep starts at the end
  const a = unipc(base);
  a.setTimesteps(4);
  const b = unipc(base);
  b.setTimesteps(4);
  b.setBeginIndex(0);
  E.scope(() => {
    const x = E.tensor(Float32Array.from(xv), [2, 3, 5]);
    const v = E.tensor(Float32Array.from(vv), [2, 3, 5]);
    tt.same(a.step(v, a.timesteps[0]!, x).toArray(), b.step(v, 12345, x).toArray(), 'lookup of timesteps[0] == begin index 0');
  });
  tt.equal(a.stepIndex, 1);
  a.dispose();
  b.dispose();
});

t.test('UniPC keeps no tensors after dispose and never frees the caller\'s tensors', async (tt) => {
  const before = E.memoryStats().liveTensors;
  const s = unipc(schedulerJson('wan21-t2v'));
  s.setTimesteps(5);
  let x = E.randn([1, 4, 2, 3, 3], { seed: 3 });
  for (const t0 of s.timesteps) {
    const v = E.randn([1, 4, 2, 3, 3], { seed: t0 });
    const next = s.step(v, t0, x);
    x.dispose(); // the scheduler holds its own reference to what it needs
    v.dispose();
    x = next;
  }
  tt.ok(x.toArray().every(Number.isFinite), 'finite result');
  tt.throws(() => s.step(x, 0, x), /after the last timestep/, 'stepping past the schedule throws');
  x.dispose();
  s.dispose();
  tt.equal(E.memoryStats().liveTensors, before, 'no live tensors left');
});

t.test('UniPC rejects configurations it does not implement and bad calls', async (tt) => {
  const base = schedulerJson('wan21-t2v');
  tt.throws(() => unipc({ ...base, use_flow_sigmas: false }), /use_flow_sigmas=true/);
  tt.throws(() => unipc({ ...base, prediction_type: 'epsilon' }), /prediction_type 'epsilon'/);
  tt.throws(() => unipc({ ...base, thresholding: true }), /thresholding=true/);
  tt.throws(() => unipc({ ...base, use_karras_sigmas: true }), /use_karras_sigmas=true/);
  const s = unipc(base);
  tt.throws(() => s.step(E.zeros([1]), 999, E.zeros([1])), /setTimesteps\(\) before step\(\)/);
  tt.throws(() => s.setTimesteps(0), /num_inference_steps must be an integer >= 1/);
  tt.throws(() => unipc({ ...base, use_dynamic_shifting: true }).setTimesteps(4), /mu must be passed/);
  // dynamic shifting with mu replaces the fixed shift: exp(mu) = 3 gives the shift-3 table
  const d = unipc({ ...base, use_dynamic_shifting: true });
  d.setTimesteps(10, { mu: Math.log(3) });
  const fixed = unipc(base);
  fixed.setTimesteps(10);
  tt.ok(relL2(d.sigmas, fixed.sigmas) < 1e-7, 'mu = ln(shift) equals flow_shift');
});

t.test('flow-match Euler: Z-Image and FLUX.2 reference tables (custom sigmas, static and dynamic shift) and steps', async (tt) => {
  for (const c of ['zimage-turbo', 'flux2-klein']) {
    const f = io(c);
    const spec = JSON.parse(readFileSync(join(GOLDEN, c, 'case.json'), 'utf8')) as {
      checks: Array<{ name: string; outputs: Record<string, string>; params: { entries?: Array<{ num_inference_steps: number; input_sigmas?: number[]; mu: number }>; mu?: number; num_inference_steps?: number } }>;
    };
    const check = spec.checks.find((x) => x.name === 'scheduler')!;
    const keys = Object.values(check.outputs);
    check.params.entries!.forEach((e, i) => {
      const n = e.num_inference_steps;
      const sigmas = e.input_sigmas ?? Array.from({ length: n }, (_, k) => Math.fround(1 + (k * (1 / n - 1)) / (n - 1)));
      const s = euler(schedulerJson(c));
      s.setTimesteps(n, { sigmas, mu: e.mu });
      tt.same(s.timesteps, values(f, keys[2 * i]!), `${c} n=${n}: timesteps identical`);
      tt.same(s.sigmas, values(f, keys[2 * i + 1]!), `${c} n=${n}: sigmas identical`);
    });
    const stepCheck = spec.checks.find((x) => x.name === 'scheduler_step')!;
    const n = stepCheck.params.num_inference_steps!;
    const s = euler(schedulerJson(c));
    s.setTimesteps(n, { sigmas: Array.from({ length: n }, (_, k) => Math.fround(1 + (k * (1 / n - 1)) / (n - 1))), mu: stepCheck.params.mu ?? 0 });
    tt.same(s.timesteps, values(f, 'scheduler_step/timesteps'), `${c}: stepping timesteps`);
    const ref = values(f, 'scheduler_step/samples');
    const got = stepThrough(s, f, 'scheduler_step');
    const per = ref.length / got.length;
    got.forEach((x, i) => tt.ok(relL2(x, ref.slice(i * per, (i + 1) * per)) < 1e-6, `${c}: sample after step ${i}`));
    f.dispose();
  }
});

t.test('flow-match Euler: default schedule, shift, calculate_shift, scale_noise and errors', async (tt) => {
  const s = euler({ num_train_timesteps: 1000, shift: 1.0 });
  s.setTimesteps(4);
  // unshifted default: linspace(1000, 1, 4) / 1000
  tt.ok(relL2(s.sigmas, [1, 0.667, 0.334, 0.001, 0]) < 1e-6, 'linear training-range schedule');
  tt.same(s.timesteps, s.sigmas.slice(0, 4).map((x) => Math.fround(x * 1000)));
  const shifted = euler({ shift: 3.0 });
  shifted.setTimesteps(2, { sigmas: [1, 0.5] });
  tt.ok(Math.abs(shifted.sigmas[1]! - 0.75) < 1e-7, 'shift 3 maps 0.5 to 0.75');
  const cfg = parseComponentConfig('FlowMatchEulerDiscreteScheduler', {}, 'test');
  tt.ok(Math.abs(calculateShift(256, cfg) - 0.5) < 1e-12 && Math.abs(calculateShift(4096, cfg) - 1.15) < 1e-12, 'calculate_shift endpoints');
  E.scope(() => {
    shifted.setBeginIndex(1);
    const out = shifted.scaleNoise(E.full([3], 2), E.full([3], -1)).toArray();
    tt.ok(relL2(out, [0.75 * -1 + 0.25 * 2, -0.25, -0.25]) < 1e-6, 'x = sigma noise + (1 - sigma) sample');
  });
  tt.throws(() => euler({ stochastic_sampling: true }), /stochastic_sampling/);
  tt.throws(() => euler({ use_beta_sigmas: true }), /use_beta_sigmas/);
  tt.throws(() => euler({ use_dynamic_shifting: true }).setTimesteps(4), /mu must be passed/);
  tt.throws(() => euler({}).setTimesteps(3, { sigmas: [1, 0.5] }), /num_inference_steps \(3\) entries/);
  const e = euler({});
  e.setTimesteps(2);
  tt.throws(() => E.scope(() => e.step(E.zeros([1]), 123.5, E.zeros([1]))), /not in the schedule/);
});
