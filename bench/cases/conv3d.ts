// conv3d throughput at the Wan2.1 VAE decoder's layer shapes for 480x832 video (latent
// 60x104, z_dim 16, base_dim 96, dim_mult [1, 2, 4, 4]: decoder widths 384/384/192/96). The
// decoder runs one latent frame per chunk; each causal 3x3x3 conv sees 2 cached frames plus
// the chunk's frames, so one output frame reads 3 input frames with no temporal padding.
// Rows report GFLOP/s against the measured FMA peak (the note: against the reference GEMM rate);
// one row times the first layer's product as a plain GEMM so the conv's overhead over the GEMM
// engine is visible; PyTorch runs the same convolutions side by side where it is installed.
import * as E from '../../lib/engine/index.js';
import { type BenchCase, type BenchRow, timeIt } from '../lib.js';
import { torchRows } from '../torch.js';

interface Layer {
  name: string;
  cin: number;
  cout: number;
  k: [number, number, number];
  frames: number; // input frames (cached + new)
  h: number;
  w: number;
  pad: [number, number, number, number, number, number];
}

const layers: Layer[] = [
  { name: 'mid/up0 resnet conv 384->384 3x3x3 @60x104', cin: 384, cout: 384, k: [3, 3, 3], frames: 3, h: 60, w: 104, pad: [0, 0, 1, 1, 1, 1] },
  { name: 'up1 resnet conv 384->384 3x3x3 @120x208', cin: 384, cout: 384, k: [3, 3, 3], frames: 3, h: 120, w: 208, pad: [0, 0, 1, 1, 1, 1] },
  { name: 'up2 resnet conv 192->192 3x3x3 @240x416', cin: 192, cout: 192, k: [3, 3, 3], frames: 3, h: 240, w: 416, pad: [0, 0, 1, 1, 1, 1] },
  { name: 'up3 resnet conv 96->96 3x3x3 @480x832', cin: 96, cout: 96, k: [3, 3, 3], frames: 3, h: 480, w: 832, pad: [0, 0, 1, 1, 1, 1] },
  { name: 'first chunk causal conv 384->384 (pad front 2) @60x104', cin: 384, cout: 384, k: [3, 3, 3], frames: 1, h: 60, w: 104, pad: [2, 0, 1, 1, 1, 1] },
  { name: 'upsample3d time_conv 384->768 (3,1,1) @60x104', cin: 384, cout: 768, k: [3, 1, 1], frames: 3, h: 60, w: 104, pad: [0, 0, 0, 0, 0, 0] },
  { name: 'up1 shortcut 1x1x1 192->384 @120x208 x2 frames', cin: 192, cout: 384, k: [1, 1, 1], frames: 2, h: 120, w: 208, pad: [0, 0, 0, 0, 0, 0] },
  { name: 'conv_in 16->384 3x3x3 @60x104', cin: 16, cout: 384, k: [3, 3, 3], frames: 3, h: 60, w: 104, pad: [0, 0, 1, 1, 1, 1] },
  { name: 'conv_out 96->3 3x3x3 @480x832', cin: 96, cout: 3, k: [3, 3, 3], frames: 3, h: 480, w: 832, pad: [0, 0, 1, 1, 1, 1] },
];

const conv3dCase: BenchCase = async (ctx) => {
  const rows: BenchRow[] = [];
  const reps = ctx.quick ? 2 : 3;
  const shrink = ctx.quick ? 4 : 1; // quick mode: a quarter of the height and the width
  const row = (name: string, flops: number, ms: number): BenchRow => {
    const gflops = flops / ms / 1e6;
    const note = ctx.gemmGflops ? `${((100 * gflops) / ctx.gemmGflops).toFixed(0)}% of the reference GEMM rate` : undefined;
    return { group: 'conv3d', name, ms, gflops, ratio: gflops / ctx.peakGflops, vs: 'fma peak', ...(note ? { note } : {}) };
  };
  for (const [i, l] of layers.entries()) {
    const h = l.h / shrink;
    const w = l.w / shrink;
    const outFrames = l.frames + l.pad[0] + l.pad[1] - l.k[0] + 1;
    const K = l.cin * l.k[0] * l.k[1] * l.k[2];
    const positions = outFrames * h * w;
    const flops = 2 * l.cout * K * positions;
    const [x, weight, bias] = E.scope(() => [
      E.randn([1, l.cin, l.frames, h, w], { seed: 1 }),
      E.mul(E.randn([l.cout, l.cin, ...l.k], { seed: 2 }), 0.02),
      E.randn([l.cout], { seed: 3 }),
    ]);
    try {
      const ms = await timeIt(() => E.scope(() => void E.conv3d(x, weight, bias, { padding: l.pad })), reps);
      rows.push(row(`${l.name}: x [1, ${l.cin}, ${l.frames}, ${h}, ${w}]`, flops, ms));
    } finally {
      E.disposeAll([x, weight, bias]);
    }
    if (i === 0) {
      // the first layer's product as one plain GEMM, [O, K] @ [K, positions]
      const [a, b] = E.scope(() => [E.randn([l.cout, K], { seed: 4 }), E.randn([K, positions], { seed: 5 })]);
      try {
        const ms = await timeIt(() => E.scope(() => void E.matmul(a, b)), reps);
        rows.push(row(`the same product as a plain GEMM ${l.cout}x${K}x${positions}`, flops, ms));
      } finally {
        E.disposeAll([a, b]);
      }
    }
  }
  const specs = layers.map((l) => ({
    name: l.name, cin: l.cin, cout: l.cout, k: l.k, frames: l.frames, h: l.h / shrink, w: l.w / shrink,
    // F.pad order (left, right, top, bottom, front, back)
    pad: [l.pad[4], l.pad[5], l.pad[2], l.pad[3], l.pad[0], l.pad[1]],
  }));
  rows.push(
    ...torchRows(
      'conv3d',
      `
import torch.nn.functional as F
for l in ${JSON.stringify(specs)}:
    x = torch.randn(1, l["cin"], l["frames"], l["h"], l["w"])
    w = torch.randn(l["cout"], l["cin"], *l["k"]) * 0.02
    b = torch.randn(l["cout"])
    ms = bench(lambda: F.conv3d(F.pad(x, l["pad"]), w, b), ${reps})
    out_frames = l["frames"] + l["pad"][4] + l["pad"][5] - l["k"][0] + 1
    flops = 2 * l["cout"] * l["cin"] * l["k"][0] * l["k"][1] * l["k"][2] * out_frames * l["h"] * l["w"]
    rows.append({"name": f'{l["name"]} (F.pad + F.conv3d)', "ms": ms, "gflops": flops / ms / 1e6})
`,
      ctx.threads,
      ctx.peakGflops,
      'fma peak',
    ),
  );
  return rows;
};

export default conv3dCase;
