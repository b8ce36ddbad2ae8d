// `npm run bench:gpu`: CUDA kernel throughput next to the device's measured ceilings (bf16 GEMM
// TFLOP/s and device-to-device copy GB/s), and flash attention at 32k tokens x 12/24 heads x 128
// dims against the best attention PyTorch offers on the same GPU (bench/py/torch_attention.py,
// run first so that our caching allocator does not hold memory torch needs). Prints a table and
// writes bench/results/gpu-<card>-<date>.json and bench/results/gpu-latest.md. BENCH_QUICK=1:
// smaller shapes, fewer iterations.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as E from '../lib/engine/index.js';
import type { DType, Tensor } from '../lib/engine/index.js';

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.env.BENCH_QUICK === '1';

interface Row {
  group: string;
  name: string;
  ms: number;
  tflops?: number;
  gbps?: number;
  /** fraction of the ceiling named in `vs` */
  ratio?: number;
  vs?: string;
  note?: string;
}

const info = E.cudaInfo();
if (!info.available) {
  console.log(`CUDA benchmarks skipped: no device (${info.reason})`);
  process.exit(0);
}
const card = info.devices[0]?.name ?? 'unknown GPU';
console.log(`device: ${card} (sm_${info.devices[0]?.sm}), driver CUDA ${info.driverVersion}, ${info.library.build}`);
console.log(`cuBLASLt: ${info.cublasLt ?? 'not found'}${quick ? ' (quick mode)' : ''}`);

/** Milliseconds per call of fn (queued `iters` times, one device sync) after warm-up. */
function timeGpu(fn: () => void, iters: number, warmup = 2): number {
  for (let i = 0; i < warmup; ++i) E.scope(fn);
  E.synchronize('cuda');
  const best: number[] = [];
  for (let rep = 0; rep < 3; ++rep) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; ++i) E.scope(fn);
    E.synchronize('cuda');
    best.push(Number(process.hrtime.bigint() - t0) / 1e6 / iters);
  }
  return Math.min(...best);
}

const dev = (t: Tensor): Tensor => {
  const d = t.toDevice('cuda');
  t.dispose();
  return d;
};
const randn = (shape: number[], dtype: DType = 'bfloat16', seed = 1): Tensor =>
  E.keep(E.randn(shape, { seed, dtype, device: 'cuda' }));
const bytesOf = (t: Tensor): number => t.numel * E.elementSize(t.dtype);

const rows: Row[] = [];
const report = (r: Row) => {
  rows.push(r);
  const perf = r.tflops !== undefined ? `${r.tflops.toFixed(1)} TFLOP/s` : `${(r.gbps ?? 0).toFixed(0)} GB/s`;
  const ratio = r.ratio !== undefined ? ` (${(100 * r.ratio).toFixed(0)}% of ${r.vs})` : '';
  console.log(`${r.group.padEnd(10)} ${r.name.padEnd(64)} ${r.ms.toFixed(3).padStart(9)} ms  ${perf}${ratio}${r.note ? `  ${r.note}` : ''}`);
};

// ---- torch first (it needs the memory our cache would hold) ----
const L = quick ? 8192 : 32768;
const attnShapes = [
  { H: 12, L, D: 128, causal: false },
  { H: 24, L, D: 128, causal: false },
  { H: 24, L, D: 128, causal: true },
];
interface TorchRow { H: number; L: number; D: number; causal: boolean; backend: string; ms: number }
let torchRows: TorchRow[] = [];
let torchVersion = '';
try {
  const out = execFileSync('python3', [join(here, 'py', 'torch_attention.py'), JSON.stringify(attnShapes)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const parsed = JSON.parse(out.trim().split('\n').pop() as string) as { torch: string; rows: TorchRow[] };
  torchRows = parsed.rows;
  torchVersion = parsed.torch;
} catch (err) {
  console.log(`torch: no comparison (${(err as Error).message.split('\n')[0]})`);
}

// ---- ceilings ----
const copyElems = quick ? 1 << 26 : 1 << 28;
const src = E.keep(E.zeros([copyElems], { dtype: 'bfloat16', device: 'cuda' }));
const copyMs = timeGpu(() => void src.clone(), 10);
const copyGbps = (2 * bytesOf(src)) / copyMs / 1e6;
src.dispose();
report({ group: 'ceiling', name: `device copy ${(copyElems * 2) / 2 ** 20} MiB (read + write)`, ms: copyMs, gbps: copyGbps });

const G = quick ? 4096 : 8192;
const ga = randn([G, G]), gb = randn([G, G], 'bfloat16', 2);
const gemmMs = timeGpu(() => void E.matmul(ga, gb), 10);
const gemmTflops = (2 * G ** 3) / gemmMs / 1e9;
E.disposeAll([ga, gb]);
report({ group: 'ceiling', name: `bf16 GEMM ${G}^3 (cuBLASLt)`, ms: gemmMs, tflops: gemmTflops });

const vsGemm = (name: string, group: string, flops: number, ms: number, note?: string) =>
  report({ group, name, ms, tflops: flops / ms / 1e9, ratio: flops / ms / 1e9 / gemmTflops, vs: 'bf16 GEMM', ...(note ? { note } : {}) });
const vsCopy = (name: string, group: string, bytes: number, ms: number) =>
  report({ group, name, ms, gbps: bytes / ms / 1e6, ratio: bytes / ms / 1e6 / copyGbps, vs: 'device copy' });

// ---- host transfers ----
{
  const n = quick ? 1 << 24 : 1 << 26;
  const host = E.keep(E.zeros([n]));
  const up = timeGpu(() => void host.toDevice('cuda'), 3, 1);
  report({ group: 'transfer', name: `upload ${(n * 4) / 2 ** 20} MiB (pinned staging)`, ms: up, gbps: (n * 4) / up / 1e6 });
  const d = E.keep(host.toDevice('cuda'));
  const down = timeGpu(() => void d.toDevice('cpu'), 3, 1);
  report({ group: 'transfer', name: `download ${(n * 4) / 2 ** 20} MiB`, ms: down, gbps: (n * 4) / down / 1e6 });
  E.disposeAll([host, d]);
}

// ---- GEMM shapes of a DiT block (Wan2.1 14B: hidden 5120, ffn 13824; tokens = a 480p 81-frame video) ----
{
  const T = quick ? 8192 : 32760;
  const x = randn([1, T, 5120]), wq = randn([5120, 5120], 'bfloat16', 3), bq = randn([5120], 'bfloat16', 4);
  const w1 = randn([13824, 5120], 'bfloat16', 5), b1 = randn([13824], 'bfloat16', 6);
  vsGemm(`linear x[${T}, 5120] @ W[5120, 5120]^T + bias`, 'gemm', 2 * T * 5120 * 5120, timeGpu(() => void E.linear(x, wq, bq), 5));
  vsGemm(`linear + bias + gelu_tanh epilogue -> [${T}, 13824]`, 'gemm', 2 * T * 5120 * 13824, timeGpu(() => void E.linear(x, w1, b1, 'gelu_tanh'), 5));
  vsGemm(`linear + bias + silu (extra pass) -> [${T}, 13824]`, 'gemm', 2 * T * 5120 * 13824, timeGpu(() => void E.linear(x, w1, b1, 'silu'), 5));
  const xf = randn([4096, 4096], 'float32'), wf = randn([4096, 4096], 'float32', 7);
  vsGemm('float32 GEMM 4096^3 (no TF32)', 'gemm', 2 * 4096 ** 3, timeGpu(() => void E.matmul(xf, wf), 5));
  E.disposeAll([x, wq, bq, w1, b1, xf, wf]);
}

// ---- attention ----
for (const s of attnShapes) {
  const q = randn([1, s.H, s.L, s.D]), k = randn([1, s.H, s.L, s.D], 'bfloat16', 2), v = randn([1, s.H, s.L, s.D], 'bfloat16', 3);
  const flops = 4 * s.H * s.L * s.L * s.D * (s.causal ? 0.5 : 1);
  const ms = timeGpu(() => void E.attention(q, k, v, { causal: s.causal }), quick ? 5 : 3, 1);
  const t = torchRows.find((r) => r.H === s.H && r.L === s.L && r.D === s.D && r.causal === s.causal);
  const name = `flash attention bf16 [1, ${s.H}, ${s.L}, ${s.D}]${s.causal ? ' causal' : ''}`;
  const note = t ? `torch ${torchVersion} ${t.backend}: ${t.ms.toFixed(2)} ms, ${(flops / t.ms / 1e9).toFixed(1)} TFLOP/s (ours ${(t.ms / ms).toFixed(2)}x)` : 'no torch comparison';
  vsGemm(name, 'attention', flops, ms, note);
  if (t) report({ group: 'attention', name: `torch ${torchVersion} ${t.backend} [1, ${s.H}, ${s.L}, ${s.D}]${s.causal ? ' causal' : ''}`, ms: t.ms, tflops: flops / t.ms / 1e9, ratio: flops / t.ms / 1e9 / gemmTflops, vs: 'bf16 GEMM' });
  E.disposeAll([q, k, v]);
}
{
  const Lg = quick ? 2048 : 4096;
  const q = randn([1, 12, Lg, 128], 'float32'), k = randn([1, 12, Lg, 128], 'float32', 2), v = randn([1, 12, Lg, 128], 'float32', 3);
  vsGemm(`generic attention float32 [1, 12, ${Lg}, 128] (fallback kernel)`, 'attention', 4 * 12 * Lg * Lg * 128, timeGpu(() => void E.attention(q, k, v), 2, 1));
  E.disposeAll([q, k, v]);
}

// ---- memory-bound DiT and VAE ops (bytes read + written) ----
{
  const T = quick ? 8192 : 32760;
  const x = randn([1, T, 5120]), y = randn([1, T, 5120], 'bfloat16', 2);
  const shift = randn([1, 1, 5120], 'bfloat16', 3), scale = randn([1, 1, 5120], 'bfloat16', 4), w = randn([5120], 'bfloat16', 5);
  const b = bytesOf(x);
  vsCopy('add bf16', 'elementwise', 3 * b, timeGpu(() => void E.add(x, y), 10));
  vsCopy('silu bf16', 'elementwise', 2 * b, timeGpu(() => void E.silu(x), 10));
  vsCopy('cast bf16 -> f32', 'elementwise', 3 * b, timeGpu(() => void x.to('float32'), 10));
  vsCopy('layer norm (no affine)', 'norm', 2 * b, timeGpu(() => void E.layerNorm(x, null, null, 1e-6), 10));
  vsCopy('rms norm', 'norm', 2 * b, timeGpu(() => void E.rmsNorm(x, w, 1e-6), 10));
  vsCopy('normModulate (layer norm + shift/scale)', 'fused', 2 * b, timeGpu(() => void E.normModulate(x, { shift, scale, eps: 1e-6 }), 10));
  vsCopy('gatedAdd (x + y * gate)', 'fused', 3 * b, timeGpu(() => void E.gatedAdd(x, y, shift), 10));
  const q = x.view(1, T, 5120 / 128, 128);
  const cos = E.keep(E.zeros([T, 64], { device: 'cuda' })), sin = E.keep(E.zeros([T, 64], { device: 'cuda' }));
  vsCopy(`rope interleaved [1, ${T}, ${5120 / 128}, 128]`, 'fused', 2 * b, timeGpu(() => void E.rope(q, cos, sin, true), 10));
  const logits = randn([16, 4096, 4096]);
  vsCopy('softmax [16, 4096, 4096]', 'elementwise', 2 * bytesOf(logits), timeGpu(() => void E.softmax(logits), 5));
  vsCopy(`randn float32 ${T}x5120`, 'random', 4 * T * 5120, timeGpu(() => void E.randn([T, 5120], { seed: 9, device: 'cuda' }), 5));
  E.disposeAll([x, y, shift, scale, w, cos, sin, logits]);
}
{
  const h = quick ? 60 : 120, w = quick ? 104 : 208;
  const v = randn([1, 384, 3, h, w]), gw = randn([384], 'bfloat16', 2);
  vsCopy(`group norm 32 groups [1, 384, 3, ${h}, ${w}]`, 'vae', 2 * bytesOf(v), timeGpu(() => void E.groupNorm(v, 32, gw, gw, 1e-6), 5));
  const gwf = randn([384], 'float32', 3);
  vsCopy('normalize channels + silu (Wan VAE RMS norm)', 'vae', 2 * bytesOf(v), timeGpu(() => void E.normalizeChannels(v, gwf, gwf, { scale: Math.sqrt(384), activation: 'silu' }), 5));
  vsCopy('upsample nearest 2x (H, W)', 'vae', 5 * bytesOf(v), timeGpu(() => void E.upsampleNearest(v, [3, 2 * h, 2 * w]), 5));
  const wc = dev(E.mul(E.randn([384, 384, 3, 3, 3], { seed: 4 }), 0.02).to('bfloat16'));
  vsGemm(`conv3d 384->384 3x3x3 @${h}x${w} (im2col + cuBLASLt)`, 'vae', 2 * 384 * 384 * 27 * h * w, timeGpu(() => void E.conv3d(v, wc, null, { padding: [0, 0, 1, 1, 1, 1] }), 3, 1));
  E.disposeAll([v, gw, gwf, wc]);
}

// ---- LoRA merge ----
{
  const base = randn([5120, 5120]), out = E.keep(E.empty([5120, 5120], { dtype: 'bfloat16', device: 'cuda' }));
  const deltas = [0, 1, 2, 3].map((i) => ({ up: randn([5120, 64], 'bfloat16', 10 + i), down: randn([64, 5120], 'bfloat16', 20 + i), scale: 0.5 }));
  const ms = timeGpu(() => E.loraMerge(base, deltas, out), 10);
  vsCopy('loraMerge 5120x5120 bf16, 4 adapters rank 64 (bytes of W in + out)', 'lora', 2 * bytesOf(base), ms);
  E.disposeAll([base, out, ...deltas.flatMap((d) => [d.up, d.down])]);
}

// ---- results ----
const fmt = (v: number | undefined, digits: number) => (v === undefined ? '' : v.toFixed(digits));
const header = ['group', 'case', 'ms', 'TFLOP/s', 'GB/s', 'ratio', 'vs', 'note'];
const body = rows.map((r) => [r.group, r.name, fmt(r.ms, 3), fmt(r.tflops, 1), fmt(r.gbps, 0), r.ratio === undefined ? '' : `${(100 * r.ratio).toFixed(0)}%`, r.vs ?? '', r.note ?? '']);
const date = new Date();
const day = date.toISOString().slice(0, 10);
const slug = card.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '').toLowerCase();
const results = join(here, 'results');
mkdirSync(results, { recursive: true });
const meta = { date: date.toISOString(), card, sm: info.devices[0]?.sm, driverVersion: info.driverVersion, library: info.library.build, cublasLt: info.cublasLt, torch: torchVersion || null, quick };
const jsonPath = join(results, `gpu-${slug}-${day}${quick ? '-quick' : ''}.json`);
writeFileSync(jsonPath, `${JSON.stringify({ ...meta, ceilings: { copyGbps, gemmTflops }, rows }, null, 2)}\n`);
const md = [
  `# GPU benchmark results (${day})`,
  '',
  `${card} (sm_${meta.sm}), driver CUDA ${meta.driverVersion}, ${meta.library}${quick ? ', quick mode' : ''}.`,
  `Ceilings measured in this run: device copy ${copyGbps.toFixed(0)} GB/s, bf16 GEMM ${gemmTflops.toFixed(1)} TFLOP/s (cuBLASLt).`,
  torchVersion ? `PyTorch ${torchVersion} on the same GPU for the attention comparison.` : 'PyTorch was not available for the attention comparison.',
  '',
  `| ${header.join(' | ')} |`,
  `|${header.map(() => '---').join('|')}|`,
  ...body.map((r) => `| ${r.join(' | ')} |`),
  '',
].join('\n');
writeFileSync(join(results, 'gpu-latest.md'), md);
console.log(`\nwrote ${jsonPath} and ${join(results, 'gpu-latest.md')}`);
