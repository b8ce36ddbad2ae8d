// `node-diffusion bench` on demo models: the measured runs and steps match the request, the JSON
// report's fields, and usage errors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { type BenchReport, runBench } from '../../lib/cli/bench.js';
import { runCli } from '../helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-bench-cli-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('bench --json on demo:wan reports every measured run and step', async (t) => {
  const r = await runCli(['bench', '--model-path', 'demo:wan', '--num-frames', '5', '--height', '32', '--width', '48',
    '--num-inference-steps', '3', '--runs', '2', '--warmup', '1', '--json']);
  t.equal(r.code, 0, r.err);
  const report = JSON.parse(r.out) as BenchReport;
  t.equal(report.model, 'demo:wan');
  t.equal(report.device, 'cpu');
  t.same([report.width, report.height, report.numFrames, report.steps], [48, 32, 5, 3]);
  t.equal(report.runs.length, 2, 'warm-up runs are not reported');
  for (const run of report.runs) {
    t.equal(run.stepMs.length, 3);
    t.ok(run.stepMs.every((ms) => ms > 0));
    t.ok(run.stagesMs.denoise! > 0 && run.stagesMs.decode! > 0);
    t.ok(run.totalMs >= run.stagesMs.denoise!);
  }
  const all = report.runs.flatMap((x) => x.stepMs).sort((a, b) => a - b);
  t.ok(report.medianStepMs >= all[0]! && report.medianStepMs <= all[all.length - 1]!);
  t.ok(report.peakMemoryMb > 0 && report.peakRssMb > report.peakMemoryMb);
});

t.test('bench prints a table with one row per run', async (t) => {
  const r = await runCli(['bench', '--model-path', 'demo:zimage', '--num-inference-steps', '2', '--runs', '3', '--warmup', '0']);
  t.equal(r.code, 0, r.err);
  t.match(r.out, /demo:zimage on cpu: 64x64, 1 frame\(s\), 2 steps/);
  t.equal(r.out.split('\n').filter((l) => /^\| \d+ \|/.test(l)).length, 3);
});

t.test('bench usage and request errors exit 2', async (t) => {
  for (const [args, msg] of [
    [['--model-path', 'demo:wan', '--runs', '0'], /--runs must be in 1..1000/],
    [['--model-path', 'demo:wan', '--warmup', '-1'], /--warmup must be in 0..100/],
    [['--model-path', 'demo:wan', '--output-format', 'png'], /unknown option --output-format/],
    [['--runs', '1'], /--model-path is required/],
    [['--model-path', 'demo:wan', '--runs', 'x'], /expected an integer/],
    [['--model-path', 'demo:wan', '--num-frames', '6'], /4k\+1|frame/],
  ] as Array<[string[], RegExp]>) {
    const r = await runCli(['bench', ...args]);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, msg);
  }
  await t.rejects(runBench(['--model-path', 'demo:wan', '--height', '30']), /16/);
  const help = await runCli(['bench', '--help']);
  t.equal(help.code, 0);
  t.match(help.out, /--runs/);
  t.match(help.out, /--model-path/);
});
