// node-diffusion bench: times generations of one model at fixed settings — load, each stage, each
// denoising step — over warm-up and measured runs, and prints a table (or JSON with --json).
import { loadPipeline } from '../pipelines/load.js';
import { RequestError } from '../pipelines/types.js';
import { formatHelp, parseFlags, type FlagTable, UsageError } from './flags.js';
import { GENERATE_FLAGS, generateConfig } from './generate.js';
import type { Command } from './main.js';

/** Flags of their own; every other flag is generate's (model, size, frames, steps, device, ...). */
const BENCH_FLAGS: FlagTable = {
  runs: { type: 'int', help: 'measured generations', defaultText: '3' },
  warmup: { type: 'int', help: 'generations run first and not measured', defaultText: '1' },
  json: { type: 'boolean', help: 'print the results as JSON' },
};

const SHARED = [
  'model-path', 'config', 'prompt', 'negative-prompt', 'height', 'width', 'num-frames', 'num-inference-steps',
  'guidance-scale', 'seed', 'device', 'text-encoder-cpu-offload',
];
const HELP_FLAGS: FlagTable = {
  ...Object.fromEntries(SHARED.map((k) => [k, GENERATE_FLAGS[k]!])),
  ...BENCH_FLAGS,
};

export interface BenchRun {
  totalMs: number;
  stagesMs: Record<string, number>;
  stepMs: number[];
}

export interface BenchReport {
  model: string;
  device: string;
  width: number;
  height: number;
  numFrames: number;
  steps: number;
  loadMs: number;
  runs: BenchRun[];
  medianTotalMs: number;
  medianStepMs: number;
  peakMemoryMb: number;
  peakRssMb: number;
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** Splits bench's own flags from the generate flags that describe the workload. */
function splitArgv(argv: readonly string[]): { own: string[]; rest: string[] } {
  const own: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i] as string;
    const name = /^--(?:no-)?([a-z-]+)/.exec(a)?.[1];
    if (name && name in BENCH_FLAGS) {
      own.push(a);
      const takesValue = BENCH_FLAGS[name]!.type !== 'boolean' && !a.includes('=');
      if (takesValue && i + 1 < argv.length) own.push(argv[++i] as string);
    } else {
      rest.push(a);
    }
  }
  return { own, rest };
}

export async function runBench(argv: readonly string[], log: (line: string) => void = () => {}): Promise<BenchReport> {
  const { own, rest } = splitArgv(argv);
  const flags = parseFlags(own, BENCH_FLAGS).values;
  const runs = (flags.runs as number | undefined) ?? 3;
  const warmup = (flags.warmup as number | undefined) ?? 1;
  if (runs < 1 || runs > 1000) throw new UsageError('--runs must be in 1..1000');
  if (warmup < 0 || warmup > 100) throw new UsageError('--warmup must be in 0..100');
  for (const a of rest) {
    const name = /^--(?:no-)?([a-z0-9-]+)/.exec(a)?.[1];
    if (name && !SHARED.includes(name) && !/-path$/.test(name)) throw new UsageError(`unknown option --${name}`);
  }
  const withPrompt = rest.some((a) => a === '--prompt' || a.startsWith('--prompt=')) ? rest : [...rest, '--prompt', 'a benchmark prompt'];
  const cfg = generateConfig(withPrompt);
  if (cfg === 'help') throw new UsageError('--help is handled by the command');
  const t0 = performance.now();
  const pipeline = await loadPipeline(cfg.modelPath, {
    device: cfg.device,
    componentPaths: cfg.componentPaths,
    textEncoderCpuOffload: cfg.textEncoderCpuOffload,
  });
  const loadMs = performance.now() - t0;
  try {
    const request = pipeline.validate(cfg.request);
    const measured: BenchRun[] = [];
    let peakMemoryMb = 0;
    let shape = { width: 0, height: 0, numFrames: 0 };
    for (let i = 0; i < warmup + runs; ++i) {
      const stepMs: number[] = [];
      const start = performance.now();
      const result = await pipeline.generate({
        ...request,
        onProgress: (p) => {
          if (p.stage === 'denoise' && p.step > 0) stepMs.push(p.stepMs);
        },
      });
      const totalMs = performance.now() - start;
      shape = { width: result.width, height: result.height, numFrames: result.numFrames };
      peakMemoryMb = Math.max(peakMemoryMb, result.peakMemoryMb);
      const label = i < warmup ? `warm-up ${i + 1}/${warmup}` : `run ${i - warmup + 1}/${runs}`;
      log(`${label}: ${(totalMs / 1000).toFixed(2)} s, ${stepMs.length} steps, median step ${median(stepMs).toFixed(1)} ms`);
      if (i >= warmup) measured.push({ totalMs, stagesMs: { ...result.timings }, stepMs });
    }
    return {
      model: cfg.modelPath,
      device: pipeline.info.device,
      ...shape,
      steps: measured[0]?.stepMs.length ?? 0,
      loadMs,
      runs: measured,
      medianTotalMs: median(measured.map((r) => r.totalMs)),
      medianStepMs: median(measured.flatMap((r) => r.stepMs)),
      peakMemoryMb,
      peakRssMb: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    pipeline.dispose();
  }
}

function formatTable(r: BenchReport): string {
  const stages = [...new Set(r.runs.flatMap((run) => Object.keys(run.stagesMs)))];
  const lines = [
    `${r.model} on ${r.device}: ${r.width}x${r.height}, ${r.numFrames} frame(s), ${r.steps} steps; load ${(r.loadMs / 1000).toFixed(2)} s`,
    '',
    `| run | total (s) | ${stages.map((s) => `${s} (s)`).join(' | ')} | median step (ms) |`,
    `|---|---|${stages.map(() => '---|').join('')}---|`,
  ];
  for (const [i, run] of r.runs.entries())
    lines.push(
      `| ${i + 1} | ${(run.totalMs / 1000).toFixed(2)} | ${stages.map((s) => ((run.stagesMs[s] ?? 0) / 1000).toFixed(2)).join(' | ')} | ${median(run.stepMs).toFixed(1)} |`,
    );
  lines.push('', `median total ${(r.medianTotalMs / 1000).toFixed(2)} s, median step ${r.medianStepMs.toFixed(1)} ms, peak tensors ${r.peakMemoryMb.toFixed(0)} MB, peak RSS ${r.peakRssMb.toFixed(0)} MB`);
  return lines.join('\n');
}

const USAGE = 'Usage: node-diffusion bench --model-path <dir|org/name|demo:<family>> [--height --width --num-frames --num-inference-steps ...] [--runs N] [--warmup N] [--json]';

export const command: Command = {
  summary: 'time generations of a model (load, stages, per-step) at fixed settings',
  async run(argv) {
    if (argv.includes('--help') || argv.includes('-h')) {
      console.log(formatHelp(USAGE, HELP_FLAGS));
      return 0;
    }
    const json = argv.includes('--json');
    try {
      const report = await runBench(argv, json ? () => {} : (line) => console.error(line));
      console.log(json ? JSON.stringify(report, null, 2) : formatTable(report));
      return 0;
    } catch (err) {
      if (err instanceof UsageError || err instanceof RequestError) {
        console.error(`node-diffusion bench: ${err.message}`);
        return 2;
      }
      console.error(`node-diffusion bench: ${err instanceof Error ? err.message : String(err)}`);
      return 1;
    }
  },
};
