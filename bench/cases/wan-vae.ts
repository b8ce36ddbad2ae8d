// Wan2.1 VAE decode at 480x832 with the real Wan2.1-T2V-1.3B VAE config (random float32 weights under
// the real tensor names): time of the first latent frame (1 video frame) and of a steady-state latent
// frame (4 video frames, every causal cache filled), per video frame, with GFLOP/s counted over the
// convolutions and attention. Next to the same decode in PyTorch (bench/py/wan_vae_decode.py) when torch
// is installed. Quick mode: 240x416.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as E from '../../lib/engine/index.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { WanVae } from '../../lib/models/wan/vae.js';
import type { BenchCase, BenchRow } from '../lib.js';
import { torchRows } from '../torch.js';

const here = dirname(fileURLToPath(import.meta.url));
const realVae = join(here, '..', '..', 'test', 'fixtures', 'real-configs', 'Wan2.1-T2V-1.3B-Diffusers', 'vae');

/** A vae folder with the real config and random weights (fan-in scaled, unit norm gammas, zero biases). */
function writeRandomVae(dir: string): void {
  writeFileSync(join(dir, 'config.json'), readFileSync(join(realVae, 'config.json')));
  const tensors: Record<string, E.Tensor> = {};
  let seed = 1;
  for (const line of readFileSync(join(realVae, 'tensors.derived.tsv'), 'utf8').split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const [name, shapeText] = line.split('\t') as [string, string];
    const shape = JSON.parse(shapeText) as number[];
    if (name.endsWith('.gamma')) tensors[name] = E.ones(shape);
    else if (name.endsWith('.bias')) tensors[name] = E.zeros(shape);
    else tensors[name] = E.scope(() => E.mul(E.randn(shape, { seed: seed++ }), 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1))));
  }
  writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), tensors);
  E.disposeAll(tensors);
}

/** Multiply-adds x 2 of one decoder chunk of `frames` latent frames (first: the first chunk) at h x w. */
function decodeFlops(vae: WanVae, h: number, w: number, first: boolean): number {
  const cfg = vae.config;
  const conv = (cin: number, cout: number, taps: number, voxels: number) => 2 * cin * cout * taps * voxels;
  const resnet = (cin: number, cout: number, vox: number) =>
    conv(cin, cout, 27, vox) + conv(cout, cout, 27, vox) + (cin !== cout ? conv(cin, cout, 1, vox) : 0);
  const dims = [cfg.dim_mult.at(-1)!, ...[...cfg.dim_mult].reverse()].map((u) => (cfg.decoder_base_dim ?? cfg.base_dim) * u);
  const up = [...cfg.temperal_downsample].reverse();
  let t = 1;
  let px = h * w;
  const top = dims[0]!;
  let flops = conv(cfg.z_dim, cfg.z_dim, 1, px) + conv(cfg.z_dim, top, 27, px);
  flops += 2 * resnet(top, top, px) + conv(top, 3 * top, 1, px) + conv(top, top, 1, px) + 4 * px * px * top;
  for (let i = 0; i < cfg.dim_mult.length; ++i) {
    const cin = i > 0 ? dims[i]! / 2 : dims[i]!;
    const cout = dims[i + 1]!;
    flops += resnet(cin, cout, t * px) + cfg.num_res_blocks * resnet(cout, cout, t * px);
    if (i === cfg.dim_mult.length - 1) break;
    if (up[i] && !first) {
      flops += conv(cout, 2 * cout, 3, t * px);
      t *= 2;
    }
    px *= 4;
    flops += conv(cout, cout / 2, 9, t * px);
  }
  return flops + conv(dims.at(-1)!, cfg.out_channels, 27, t * px);
}

const wanVae: BenchCase = async (ctx) => {
  const [H, W] = ctx.quick ? [240, 416] : [480, 832];
  const [h, w] = [H / 8, W / 8];
  const dir = mkdtempSync(join(tmpdir(), 'nd-bench-wan-vae-'));
  const rows: BenchRow[] = [];
  const ceiling = ctx.gemmGflops ?? ctx.peakGflops;
  const vs = ctx.gemmGflops ? 'gemm f32' : 'fma peak';
  try {
    writeRandomVae(dir);
    const vae = await WanVae.load(dir);
    try {
      const z = E.randn([1, 16, 2, h, w], { seed: 7 });
      const marks: number[] = [];
      const t0 = performance.now();
      E.resetPeakMemory();
      const before = E.memoryStats().hostBytes;
      vae.decode(z, { onFrame: () => marks.push(performance.now()) }).dispose();
      const peakMb = (E.memoryStats().hostPeakBytes - before) / 2 ** 20;
      z.dispose();
      const firstMs = marks[0]! - t0;
      const steadyMs = marks[1]! - marks[0]!;
      const perFrame = vae.videoFrames(2) - 1;
      const firstFlops = decodeFlops(vae, h, w, true);
      const steadyFlops = decodeFlops(vae, h, w, false);
      const note = `peak ${peakMb.toFixed(0)} MiB beyond the weights`;
      rows.push(
        {
          group: 'wan-vae',
          name: `decode ${H}x${W} f32, first latent frame (1 frame)`,
          ms: firstMs,
          gflops: firstFlops / firstMs / 1e6,
          ratio: firstFlops / firstMs / 1e6 / ceiling,
          vs,
          note,
        },
        {
          group: 'wan-vae',
          name: `decode ${H}x${W} f32, per video frame (steady state, ${perFrame} frames per latent frame)`,
          ms: steadyMs / perFrame,
          gflops: steadyFlops / steadyMs / 1e6,
          ratio: steadyFlops / steadyMs / 1e6 / ceiling,
          vs,
          note,
        },
      );
      rows.push(
        ...torchRows(
          'wan-vae',
          `
import sys, time
sys.path.insert(0, ${JSON.stringify(join(here, '..', 'py'))})
from wan_vae_decode import WanVaeDecoder, randomize
cfg = json.loads(${JSON.stringify(JSON.stringify({ base_dim: vae.config.base_dim, z_dim: vae.config.z_dim, dim_mult: vae.config.dim_mult, num_res_blocks: vae.config.num_res_blocks, temperal_downsample: vae.config.temperal_downsample }))})
model = randomize(WanVaeDecoder(**cfg)).eval()
z = torch.randn(1, 16, 2, ${h}, ${w})
marks = []
import wan_vae_decode as m
orig = m.Decoder.forward
def timed(self, x, cache):
    out = orig(self, x, cache)
    marks.append(time.perf_counter())
    return out
m.Decoder.forward = timed
t0 = time.perf_counter()
model.decode(z)
first = (marks[0] - t0) * 1e3
steady = (marks[1] - marks[0]) * 1e3
rows.append({"name": "decode ${H}x${W} f32, first latent frame (1 frame)", "ms": first, "gflops": ${firstFlops} / first / 1e6})
rows.append({"name": "decode ${H}x${W} f32, per video frame (steady state, ${perFrame} frames per latent frame)", "ms": steady / ${perFrame}, "gflops": ${steadyFlops} / steady / 1e6})
`,
          ctx.threads,
          ceiling,
          vs,
        ),
      );
    } finally {
      vae.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
};

export default wanVae;
