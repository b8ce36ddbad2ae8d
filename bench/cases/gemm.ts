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
  // the FFN up-projection also with its fused bias + GELU-tanh epilogue, as the DiTs run it
  const cases: Array<[number, number, number, E.DType, boolean]> = [];
  for (const [M, K, N] of shapes) {
    cases.push([M, K, N, 'float32', false], [M, K, N, 'bfloat16', false]);
    if (N === 8960) cases.push([M, K, N, 'bfloat16', true]);
  }
  for (const [M, K, N, wdtype, fused] of cases) {
    const x = E.randn([M, K], { seed: 1 });
    const w = E.randn([N, K], { seed: 2, dtype: wdtype });
    const bias = fused ? E.randn([N], { seed: 3 }) : null;
    const timing = await timeWithCpu(() => E.linear(x, w, bias, fused ? 'gelu_tanh' : 'none').dispose(), reps, 1);
    E.disposeAll([x, w, bias]);
    const ms = timing.ms;
    const gflops = (2 * M * N * K) / ms / 1e6;
    rows.push({
      group: 'gemm',
      name: `${M}x${K}x${N} ${wdtype === 'float32' ? 'f32' : 'bf16'} weight${fused ? ' + bias + gelu_tanh' : ''}`,
      ms,
      gflops,
      ratio: gflops / ctx.peakGflops,
      vs: 'fma peak',
      note: cpuNote(gflops, timing, ctx.peakOneGflops ?? ctx.peakGflops / ctx.threads),
    });
    if (wdtype === 'float32' && !fused && K === 1536 && N === 1536) ctx.gemmGflops = gflops;
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
