// Elementwise throughput on a DiT-sized activation (2048 tokens x 3072 features, f32): the
// unary activations, softmax rows, the broadcasting binary ops of the DiT blocks (modulation
// x * (1 + scale) + shift with [1, 1, D] vectors, gated residual x + gate * y) and casts, and
// the activations again on a block small enough to stay in cache (their arithmetic cost).
// GB/s counts the bytes each op must read and write once; the ratio is against a copy of the
// same tensor (the engine's parallel memcpy, bytes read + written) measured here, the ceiling
// for a kernel that streams memory. The note gives the time per element in wall time and per
// busy core (CPU time: what the kernel costs whatever else loads the machine). Tensors stay under
// 32 MB so that freed outputs are reused by malloc instead of being mapped (and page-faulted) anew.
import * as E from '../../lib/engine/index.js';
import { native } from '../../lib/engine/native.js';
import { timeWithCpu } from '../cpu-time.js';
import type { BenchCase, BenchRow } from '../lib.js';
import { torchRows } from '../torch.js';

const D = 3072;

const elementwise: BenchCase = async (ctx) => {
  const L = ctx.quick ? 1024 : 2048;
  const n = L * D;
  const reps = ctx.quick ? 3 : 7;
  const rows: BenchRow[] = [];
  const x = E.randn([1, L, D], { seed: 1 });
  const y = E.randn([1, L, D], { seed: 2 });
  const vec = E.randn([1, 1, D], { seed: 3 });
  const xb = x.to('bfloat16');

  const measure = async (fn: () => E.Tensor) => timeWithCpu(() => fn().dispose(), reps, 1);
  const copy = await measure(() => x.clone());
  const copyGbps = (8 * n) / copy.ms / 1e6;
  const note = (t: { ms: number; busyCores: number }) =>
    `${((t.ms * 1e6) / n).toFixed(3)} ns/element, ${((t.ms * t.busyCores * 1e6) / n).toFixed(3)} per busy core (${t.busyCores.toFixed(2)} busy)`;
  rows.push({
    group: 'elementwise',
    name: `copy f32 [${L}, ${D}] (memcpy)`,
    ms: copy.ms,
    gbps: copyGbps,
    note: `${note(copy)}; vector-math kernel ${native.vecKernelName()}`,
  });

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
    rows.push({ group: 'elementwise', name: `${name} [${L}, ${D}]`, ms: t.ms, gbps, ratio: gbps / copyGbps, vs: 'copy', note: note(t) });
  }
  E.disposeAll([x, y, vec, xb]);

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
rows.append({"name": f"copy f32 [{L}, {D}]", "ms": copy_ms, "gbps": copy_gbps})
for name, fn, b in [("exp", lambda: torch.exp(x), 8), ("silu", lambda: F.silu(x), 8),
                    ("gelu_tanh", lambda: F.gelu(x, approximate="tanh"), 8), ("gelu (erf)", lambda: F.gelu(x), 8),
                    ("softmax over rows of 3072", lambda: torch.softmax(x, -1), 8),
                    ("mul x * scale[1, 1, D]", lambda: x * v, 8), ("add x + y", lambda: x + y, 12)]:
    ms = bench(fn, ${reps})
    rows.append({"name": f"{name} [{L}, {D}] (vs torch's own copy)", "ms": ms, "gbps": b * n / ms / 1e6, "ratio": b * n / ms / 1e6 / copy_gbps})
`,
      ctx.threads,
      copyGbps,
      'copy',
    ),
  );
  return rows;
};

export default elementwise;
