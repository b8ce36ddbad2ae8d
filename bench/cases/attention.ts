// Flash attention at 4k/8k/16k tokens x 12 heads x 128 dims (self-attention, no mask), in
// equivalent FLOPs 4 L^2 D H. Ratio: against the f32 GEMM rate measured by the gemm case (or
// measured here at 4096x1536x1536 when that case did not run).
import * as E from '../../lib/engine/index.js';
import { cpuNote, timeWithCpu } from '../cpu-time.js';
import { type BenchCase, type BenchRow, timeIt } from '../lib.js';
import { torchRows } from '../torch.js';

const HEADS = 12;
const DIM = 128;

async function referenceGemm(): Promise<number> {
  const [M, K, N] = [4096, 1536, 1536];
  const x = E.randn([M, K], { seed: 1 });
  const w = E.randn([N, K], { seed: 2 });
  const ms = await timeIt(() => E.linear(x, w).dispose(), 3, 1);
  x.dispose();
  w.dispose();
  return (2 * M * N * K) / ms / 1e6;
}

const attention: BenchCase = async (ctx) => {
  const gemmRate = ctx.gemmGflops ?? (ctx.gemmGflops = await referenceGemm());
  const lengths = ctx.quick ? [4096] : [4096, 8192, 16384];
  const rows: BenchRow[] = [];
  for (const L of lengths) {
    const reps = ctx.quick || L >= 16384 ? 1 : 3;
    const [q, k, v] = [1, 2, 3].map((seed) => E.randn([1, HEADS, L, DIM], { seed }));
    const timing = await timeWithCpu(() => E.attention(q, k, v).dispose(), reps, L >= 16384 ? 0 : 1);
    E.disposeAll([q, k, v]);
    const ms = timing.ms;
    const gflops = (4 * L * L * DIM * HEADS) / ms / 1e6;
    rows.push({
      group: 'attention',
      name: `L=${L} H=${HEADS} D=${DIM} f32`,
      ms,
      gflops,
      ratio: gflops / gemmRate,
      vs: 'gemm f32',
      note: cpuNote(gflops, timing, ctx.peakOneGflops ?? ctx.peakGflops / ctx.threads),
    });
  }
  rows.push(
    ...torchRows(
      'attention',
      `
import torch.nn.functional as F
for L in ${JSON.stringify(lengths)}:
    q, k, v = (torch.randn(1, ${HEADS}, L, ${DIM}) for _ in range(3))
    reps = 1 if L >= 16384 or ${ctx.quick ? 'True' : 'False'} else 3
    ms = bench(lambda: F.scaled_dot_product_attention(q, k, v), reps, 0 if L >= 16384 else 1)
    rows.append({"name": f"L={L} H=${HEADS} D=${DIM} f32 sdpa", "ms": ms, "gflops": 4 * L * L * ${DIM} * ${HEADS} / ms / 1e6})
`,
      ctx.threads,
      gemmRate,
      'gemm f32',
    ),
  );
  return rows;
};

export default attention;
