// Shared types for `npm run bench`: bench/run.ts measures the machine's ceilings, runs every
// bench/cases/*.ts module and writes the rows to bench/results/.

export interface BenchContext {
  /** single-precision FMA peak of all cores in GFLOP/s, measured by the runner */
  peakGflops: number;
  /** the same peak for one thread */
  peakOneGflops?: number;
  /** measured f32 GEMM rate at a reference shape (GFLOP/s), once the gemm case has run */
  gemmGflops?: number;
  /** fewer repetitions and smaller shapes (BENCH_QUICK=1) */
  quick: boolean;
  threads: number;
}

export interface BenchRow {
  group: string; // e.g. 'gemm', 'attention', 'conv3d', 'wan'
  name: string; // what was measured, with its shape
  ms: number; // median time of one run
  gflops?: number;
  gbps?: number;
  /** ratio against the ceiling or reference named in `vs` */
  ratio?: number;
  vs?: string;
  note?: string;
}

export type BenchCase = (ctx: BenchContext) => Promise<BenchRow[]>;

/** Median wall time in ms of fn over `reps` runs after `warmup` runs. */
export async function timeIt(fn: () => unknown, reps = 5, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; ++i) await fn();
  const times: number[] = [];
  for (let i = 0; i < reps; ++i) {
    const t0 = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)] as number;
}
