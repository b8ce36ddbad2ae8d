// The parity checker: `node-diffusion check` on every golden case (tokenize passes; kinds without
// a runner fail with the reason), comparisons and failure reporting on synthetic cases.
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import '../../lib/check/all.js';
import { findCheck, registerCheck } from '../../lib/check/registry.js';
import { relL2Error, runCase } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors.js';
import { runCli } from '../helpers/cli.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const CASES: Array<[string, string]> = [
  ['wan21-t2v', 'WanPipeline'],
  ['zimage-turbo', 'ZImagePipeline'],
  ['flux2-klein', 'Flux2KleinPipeline'],
];
const tmp = mkdtempSync(join(tmpdir(), 'nd-check-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('every golden case: tokenize passes exactly; kinds without a runner fail with the reason', async (tt) => {
  for (const [c, cls] of CASES) {
    const dir = join(GOLDEN, c);
    const only = await runCli(['check', dir, '--only', 'tokenize']);
    tt.equal(only.code, 0, `${c}: --only tokenize exits 0`);
    tt.match(only.out, new RegExp(`^${c} \\(${cls}\\) on cpu$`, 'm'));
    tt.match(only.out, /^tokenize\s+tokenize\s+0\s+exact\s+PASS$/m, `${c}: tokenize line`);
    tt.match(only.out, /^1\/1 checks passed$/m);

    const full = await runCase(dir);
    tt.equal(full.pipelineClass, cls);
    for (const r of full.checks) {
      if (findCheck(cls, r.kind)) {
        tt.ok(r.pass, `${c}/${r.name} (${r.kind}) passes: ${r.reason ?? ''}`);
      } else {
        tt.notOk(r.pass, `${c}/${r.name} fails while '${r.kind}' has no runner`);
        tt.equal(r.reason, `check kind '${r.kind}' is not implemented for ${cls}`);
      }
    }
    const tokenize = full.checks.find((r) => r.name === 'tokenize')!;
    tt.ok(tokenize.pass);
    tt.same(tokenize.outputs.map((o) => [o.output, o.metric, o.mismatches, o.errors]), [
      ['input_ids', 'exact', 0, [0]],
      ['attention_mask', 'exact', 0, [0]],
    ]);
    const whole = await runCli(['check', dir]);
    tt.equal(whole.code, full.pass ? 0 : 1, `${c}: exit code follows the results`);
    for (const r of full.checks) tt.match(whole.out, new RegExp(`^${r.name}\\s+${r.kind}\\s+.*${r.pass ? 'PASS' : 'FAIL'}`, 'm'));
  }
});

t.test('--json, --only and usage errors', async (tt) => {
  const dir = join(GOLDEN, 'wan21-t2v');
  const json = await runCli(['check', dir, '--json', '--only', 'tokenize,text_encode']);
  const parsed = JSON.parse(json.out) as { checks: Array<{ name: string; pass: boolean }>; pass: boolean; pipelineClass: string };
  tt.same(parsed.checks.map((c) => c.name), ['tokenize', 'text_encode']);
  tt.equal(parsed.pipelineClass, 'WanPipeline');
  tt.equal(json.code, parsed.pass ? 0 : 1);

  tt.equal((await runCli(['check'])).code, 2, 'no case folder');
  tt.equal((await runCli(['check', dir, '--device', 'tpu'])).code, 2, 'bad device');
  tt.equal((await runCli(['check', dir, '--bogus'])).code, 2, 'unknown option');
  const help = await runCli(['check', '--help']);
  tt.equal(help.code, 0);
  tt.match(help.out, /Usage: node-diffusion check <case-dir>/);
  const unknown = await runCli(['check', dir, '--only', 'nope']);
  tt.equal(unknown.code, 1);
  tt.match(unknown.err, /has no check 'nope' \(checks: tokenize, text_encode/);
  const missing = await runCli(['check', join(tmp, 'nowhere')]);
  tt.equal(missing.code, 1);
  tt.match(missing.err, /cannot read .*nowhere\/case.json/);
  const usage = await runCli(['--help']);
  tt.match(usage.out, /^ {2}check$/m, 'listed in the command list');
});

t.test('a device that cannot be used fails every check with the reason', async (tt) => {
  let cuda = true;
  try {
    E.empty([1], { device: 'cuda' }).dispose();
  } catch {
    cuda = false;
  }
  if (cuda) {
    tt.pass('CUDA is available here; the unusable-device path is not reachable');
    return;
  }
  const r = await runCase(join(GOLDEN, 'zimage-turbo'), { device: 'cuda', only: ['tokenize'] });
  tt.notOk(r.pass);
  tt.match(r.checks[0]!.reason, /^device cuda is not usable: /);
  const out = await runCli(['check', join(GOLDEN, 'zimage-turbo'), '--device', 'cuda', '--only', 'tokenize']);
  tt.equal(out.code, 1);
});

t.test('a wrong reference id is reported with the number of differing values', async (tt) => {
  const dir = join(tmp, 'bad-ids');
  mkdirSync(dir);
  cpSync(join(GOLDEN, 'wan21-t2v', 'case.json'), join(dir, 'case.json'));
  symlinkSync(join(GOLDEN, 'wan21-t2v', 'model'), join(dir, 'model'));
  const io = SafetensorsFile.open(join(GOLDEN, 'wan21-t2v', 'io.safetensors'));
  const ids = io.tensor('tokenize/input_ids').clone();
  const mask = io.tensor('tokenize/attention_mask');
  E.scope(() => ids.select(0, 1).select(0, 0).copy_(E.tensor(BigInt64Array.from([99n]), [])));
  writeSafetensors(join(dir, 'io.safetensors'), { 'tokenize/input_ids': ids, 'tokenize/attention_mask': mask });
  E.disposeAll([ids, mask]);
  io.dispose();
  const r = await runCase(dir, { only: ['tokenize'] });
  tt.notOk(r.pass);
  tt.equal(r.checks[0]!.reason, 'input_ids: 1 of 2560 values differ');
  const out = await runCli(['check', dir, '--only', 'tokenize']);
  tt.equal(out.code, 1);
  tt.match(out.out, /^tokenize\s+tokenize\s+\S+\s+exact\s+FAIL\s+input_ids: 1 of 2560 values differ$/m);
});

t.test('rel-L2 comparison, list outputs and failure reasons on a synthetic case', async (tt) => {
  const dir = join(tmp, 'synthetic');
  mkdirSync(join(dir, 'model'), { recursive: true });
  writeFileSync(join(dir, 'model', 'model_index.json'), JSON.stringify({ _class_name: 'CheckerTestPipeline' }));
  const ref = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) + 0.1 * i);
  const refB = Float32Array.from({ length: 6 }, (_, i) => i - 2.5);
  const ioTensors = {
    'echo/x': E.tensor(ref, [8, 8]),
    'echo/y': E.tensor(ref, [8, 8]),
    'echo/items/0': E.tensor(refB, [2, 3]),
    'echo/items/1': E.tensor(ref, [64]),
  };
  writeSafetensors(join(dir, 'io.safetensors'), ioTensors);
  E.disposeAll(ioTensors);
  const check = (name: string, max: number) => ({
    name,
    kind: name,
    inputs: { x: 'echo/x', items: ['echo/items/0', 'echo/items/1'] },
    outputs: { y: 'echo/y', items: ['echo/items/0', 'echo/items/1'] },
    params: {},
    tolerance: { y: { metric: 'rel_l2', max }, items: { metric: 'rel_l2', max } },
  });
  writeFileSync(
    join(dir, 'case.json'),
    JSON.stringify({
      case: 'synthetic',
      model_dir: 'model',
      io_file: 'io.safetensors',
      checks: [check('scaled', 1e-3), check('scaled_tight', 1e-6), check('shape', 1), check('missing', 1), check('throws', 1), check('nan', 1), check('unregistered', 1)],
    }),
  );
  const scale = 1 + 1e-4;
  registerCheck('CheckerTestPipeline', 'scaled', async (ctx) => ({
    y: E.mul(ctx.inputTensor('x'), scale),
    items: ctx.inputList('items').map((it) => E.mul(it, scale)),
  }));
  registerCheck('CheckerTestPipeline', 'scaled_tight', async (ctx) => ({
    y: E.mul(ctx.inputTensor('x'), scale),
    items: ctx.inputList('items').map((it) => it.clone()),
  }));
  registerCheck('CheckerTestPipeline', 'shape', async (ctx) => {
    const x = ctx.inputTensor('x');
    return { y: E.scope(() => x.reshape(4, 16).clone()), items: ctx.inputList('items') };
  });
  registerCheck('CheckerTestPipeline', 'missing', async (ctx) => ({ items: ctx.inputList('items').slice(0, 1) }));
  registerCheck('CheckerTestPipeline', 'throws', async (ctx) => {
    ctx.inputTensor('items');
    return {};
  });
  registerCheck('CheckerTestPipeline', 'nan', async (ctx) => ({ y: E.mul(ctx.inputTensor('x'), Number.NaN), items: ctx.inputList('items') }));
  tt.throws(() => registerCheck('CheckerTestPipeline', 'nan', async () => ({})), /already registered/);

  const before = E.memoryStats();
  const r = await runCase(dir);
  const by = Object.fromEntries(r.checks.map((c) => [c.name, c]));
  const expected = relL2Error(Float64Array.from(ref, (v) => Math.fround(v * scale)), ref);
  tt.ok(by.scaled!.pass, 'within 1e-3');
  tt.ok(Math.abs(by.scaled!.worstRelL2! - 1e-4) < 2e-6, `worst rel-L2 ${by.scaled!.worstRelL2} ~ 1e-4`);
  tt.ok(Math.abs(by.scaled!.outputs[0]!.errors[0]! - expected) < 1e-7, 'rel-L2 computed in float64 like the reference formula');
  tt.equal(by.scaled!.outputs[1]!.errors.length, 2, 'one error per list item');
  tt.notOk(by.scaled_tight!.pass);
  tt.match(by.scaled_tight!.reason, /^y: rel-L2 1\.00e-4 exceeds 0\.000001$/);
  tt.same(by.scaled_tight!.outputs[1]!.errors, [0, 0]);
  tt.equal(by.shape!.reason, 'y: shape [4, 16] differs from the reference [8, 8]');
  tt.equal(by.missing!.reason, "the runner returned no 'y'");
  tt.match(by.throws!.reason, /^error: input 'items' of check 'throws' is a list$/);
  tt.equal(by.nan!.reason, 'y: output holds NaN or infinite values');
  tt.equal(by.unregistered!.reason, "check kind 'unregistered' is not implemented for CheckerTestPipeline");
  tt.equal(E.memoryStats().liveTensors, before.liveTensors, 'inputs and outputs are freed after each check');
  tt.equal(E.memoryStats().mappedBytes, before.mappedBytes, 'io.safetensors is unmapped');
});
