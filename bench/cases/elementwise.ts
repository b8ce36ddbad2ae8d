// Elementwise throughput on a DiT-sized activation (8192 tokens x 3072 features, f32, 100 MB): the
// unary activations, softmax rows, the broadcasting binary ops of the DiT blocks (modulation
// x * (1 + scale) + shift with [1, 1, D] vectors, gated residual x + gate * y) and casts, and
// the activations again on a block small enough to stay in cache (their arithmetic cost).
// GB/s counts the bytes each op must read and write once. Every op writes a new tensor, so the
// ratio is against a copy into a new tensor of the same size; a copy into an existing tensor shows
// the memory ceiling without allocation (the two agree since the host allocator reuses freed large
// blocks, csrc/cpu/memory.cpp; before, every new 100 MB tensor was mapped and faulted in afresh).
// The note gives the time per element in wall time and per busy core (CPU time: the cost
// whatever else loads the machine).
import * as E from '../../lib/engine/index.js';
import { native } from '../../lib/engine/native.js';
import { timeWithCpu } from '../cpu-time.js';
import type { BenchCase, BenchRow } from '../lib.js';
import { torchRows } from '../torch.js';

const D = 3072;

const elementwise: BenchCase = async (ctx) => {
  const L = ctx.quick ? 4096 : 8192;
  const n = L * D;
  const reps = ctx.quick ? 3 : 7;
  const rows: BenchRow[] = [];
  const x = E.randn([1, L, D], { seed: 1 });
  const y = E.randn([1, L, D], { seed: 2 });
  const vec = E.randn([1, 1, D], { seed: 3 });
  const xb = x.to('bfloat16');
  const dst = E.empty([1, L, D]);

  const measure = async (fn: () => E.Tensor) => timeWithCpu(() => fn().dispose(), reps, 1);
  const note = (t: { ms: number; busyCores: number }) =>
    `${((t.ms * 1e6) / n).toFixed(3)} ns/element, ${((t.ms * t.busyCores * 1e6) / n).toFixed(3)} per busy core (${t.busyCores.toFixed(2)} busy)`;
  const into = await timeWithCpu(() => native.copyInto(dst.handle, x.handle), reps, 1);
  rows.push({
    group: 'elementwise',
    name: `copy f32 [${L}, ${D}] into an existing tensor (memcpy)`,
    ms: into.ms,
    gbps: (8 * n) / into.ms / 1e6,
    note: `${note(into)}; vector-math kernel ${native.vecKernelName()}`,
  });
  const copy = await measure(() => x.clone());
  const copyGbps = (8 * n) / copy.ms / 1e6;
  rows.push({ group: 'elementwise', name: `copy f32 [${L}, ${D}] into a new tensor`, ms: copy.ms, gbps: copyGbps, note: note(copy) });

  // [name, op, bytes moved per element]
  const cases: Array<[string, () => E.Tensor, number]> = [
    ['exp', () => E.exp(x), 8],
    ['tanh', () => E.tanh(x), 8],
    ['sigmoid', () => E.sigmoid(x), 8],
    ['silu', () => E.silu(x), 8],
    ['gelu_tanh', () => E.geluTanh(x), 8],
    ['gelu (erf)', () => E.gelu(x), 8],
    ['softmax over rows of 3072', () => E.softmax(x, -1), 8],
    ['add x + y', () => E.add(x, y), 12],
    ['mul x * scale[1, 1, D] (modulation)', () => E.mul(x, vec), 8],
    ['add x + shift[1, 1, D] (modulation)', () => E.add(x, vec), 8],
    ['mul gate[1, 1, D] * y (gated residual)', () => E.mul(vec, y), 8],
    ['gatedAdd x + y * gate[1, 1, D] (fused)', () => E.gatedAdd(x, y, vec), 12],
    ['affine x * 2 + 1', () => E.affine(x, 2, 1), 8],
    ['cast f32 -> bf16', () => x.to('bfloat16'), 6],
    ['cast bf16 -> f32', () => xb.to('float32'), 6],
  ];
  for (const [name, fn, bytes] of cases) {
    const t = await measure(fn);
    const gbps = (bytes * n) / t.ms / 1e6;
    rows.push({ group: 'elementwise', name: `${name} [${L}, ${D}]`, ms: t.ms, gbps, ratio: gbps / copyGbps, vs: 'copy to new', note: note(t) });
  }
  E.disposeAll([x, y, vec, xb, dst]);

  // the activations on a block that stays in cache (3 MB in, 3 MB out): their arithmetic cost
  const Ls = 256;
  const ns = Ls * D;
  const xs = E.randn([1, Ls, D], { seed: 4 });
  const inCache: Array<[string, () => E.Tensor]> = [
    ['exp', () => E.exp(xs)],
    ['tanh', () => E.tanh(xs)],
    ['silu', () => E.silu(xs)],
    ['gelu_tanh', () => E.geluTanh(xs)],
    ['gelu (erf)', () => E.gelu(xs)],
    ['softmax over rows of 3072', () => E.softmax(xs, -1)],
  ];
  for (const [name, fn] of inCache) {
    const t = await timeWithCpu(() => fn().dispose(), ctx.quick ? 20 : 100, 5);
    const gbps = (8 * ns) / t.ms / 1e6;
    rows.push({
      group: 'elementwise',
      name: `${name} [${Ls}, ${D}] in cache`,
      ms: t.ms,
      gbps,
      note: `${((t.ms * 1e6) / ns).toFixed(3)} ns/element, ${((t.ms * t.busyCores * 1e6) / ns).toFixed(3)} per busy core (${t.busyCores.toFixed(2)} busy)`,
    });
  }
  xs.dispose();

  rows.push(
    ...torchRows(
      'elementwise',
      `
import torch.nn.functional as F
L, D, n = ${L}, ${D}, ${n}
x = torch.randn(1, L, D); y = torch.randn(1, L, D); v = torch.randn(1, 1, D)
copy_ms = bench(lambda: x.clone(), ${reps})
copy_gbps = 8 * n / copy_ms / 1e6
rows.append({"name": f"copy f32 [{L}, {D}] into a new tensor", "ms": copy_ms, "gbps": copy_gbps})
for name, fn, b in [("exp", lambda: torch.exp(x), 8), ("silu", lambda: F.silu(x), 8),
                    ("gelu_tanh", lambda: F.gelu(x, approximate="tanh"), 8), ("gelu (erf)", lambda: F.gelu(x), 8),
                    ("softmax over rows of 3072", lambda: torch.softmax(x, -1), 8),
                    ("mul x * scale[1, 1, D]", lambda: x * v, 8), ("add x + y", lambda: x + y, 12)]:
    ms = bench(fn, ${reps})
    rows.append({"name": f"{name} [{L}, {D}] (vs torch's own copy to new)", "ms": ms, "gbps": b * n / ms / 1e6, "ratio": b * n / ms / 1e6 / copy_gbps})
`,
      ctx.threads,
      copyGbps,
      'copy to new',
    ),
  );
  return rows;
};

export default elementwise;
