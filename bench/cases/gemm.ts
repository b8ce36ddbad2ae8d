// GEMM throughput at transformer shapes (tokens x in x out: Wan2.1-1.3B attention/FFN
// projections and a 4096-wide layer), f32 activations with f32 and bf16 weights, through
// linear() as the models call it. Ratio: against the measured FMA peak of all cores.
import * as E from '../../lib/engine/index.js';
import { cpuNote, timeWithCpu } from '../cpu-time.js';
import type { BenchCase, BenchRow } from '../lib.js';
import { torchRows } from '../torch.js';

const SHAPES: Array<[number, number, number]> = [
  [4096, 1536, 1536],
  [4096, 1536, 8960],
  [512, 4096, 4096],
];

const gemm: BenchCase = async (ctx) => {
  const rows: BenchRow[] = [];
  const shapes = ctx.quick ? SHAPES.map(([m, k, n]) => [m / 4, k, n] as [number, number, number]) : SHAPES;
  const reps = ctx.quick ? 2 : 5;
  for (const [M, K, N] of shapes) {
    for (const wdtype of ['float32', 'bfloat16'] as E.DType[]) {
      const x = E.randn([M, K], { seed: 1 });
      const w = E.randn([N, K], { seed: 2, dtype: wdtype });
      const timing = await timeWithCpu(() => E.linear(x, w).dispose(), reps, 1);
      x.dispose();
      w.dispose();
      const ms = timing.ms;
      const gflops = (2 * M * N * K) / ms / 1e6;
      rows.push({
        group: 'gemm',
        name: `${M}x${K}x${N} ${wdtype === 'float32' ? 'f32' : 'bf16'} weight`,
        ms,
        gflops,
        ratio: gflops / ctx.peakGflops,
        vs: 'fma peak',
        note: cpuNote(gflops, timing, ctx.peakOneGflops ?? ctx.peakGflops / ctx.threads),
      });
      if (wdtype === 'float32' && K === 1536 && N === 1536) ctx.gemmGflops = gflops;
    }
  }
  const list = JSON.stringify(shapes);
  rows.push(
    ...torchRows(
      'gemm',
      `
for (M, K, N) in ${list}:
    x = torch.randn(M, K)
    for dt in (torch.float32, torch.bfloat16):
        w = torch.randn(N, K, dtype=dt)
        xx = x.to(dt)
        ms = bench(lambda: torch.nn.functional.linear(xx, w), ${reps})
        rows.append({"name": f"{M}x{K}x{N} {'f32' if dt == torch.float32 else 'bf16 (x and w)'}", "ms": ms, "gflops": 2 * M * N * K / ms / 1e6})
`,
      ctx.threads,
      ctx.peakGflops,
      'fma peak',
    ),
  );
  return rows;
};

export default gemm;
