// Wan2.1 DiT denoising step at the real 1.3B widths (1536 wide, 12 heads, ffn 8960, text 4096) with
// 2 blocks (random float32 weights under the real tensor names): one forward pass at 4096 and 16384
// video tokens (512x512 latents of 4 and 16 latent frames), per block, and the denoising step of the
// full 30-block model with CFG (two passes) extrapolated from them. GFLOP/s are counted over the
// projections, attention and feed-forward. Next to the same forward in PyTorch when torch is
// installed (one timed run without warm-up at 16k tokens, the median of 3 otherwise). Quick mode:
// 1024 and 4096 tokens.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { wanTransformerTensorShapes } from '../../lib/models/wan/layout.js';
import { WanTransformer3DModel } from '../../lib/models/wan/transformer.js';
import { fanInStd, randomWeights } from '../../lib/pipelines/demo/weights.js';
import { type BenchCase, type BenchRow, timeIt } from '../lib.js';
import { torchRows } from '../torch.js';

const here = dirname(fileURLToPath(import.meta.url));
const REAL = join(here, '..', '..', 'test', 'fixtures', 'real-configs', 'Wan2.1-T2V-1.3B-Diffusers', 'transformer', 'config.json');
const BLOCKS = 2;
const FULL_BLOCKS = 30;
const TEXT_TOKENS = 512;

/** The transformer folder: the real config with 2 blocks, fan-in scaled random weights (also bench/cases/parallel.ts). */
export function writeTransformer(dir: string): Record<string, unknown> {
  const config = { ...(JSON.parse(readFileSync(REAL, 'utf8')) as Record<string, unknown>), num_layers: BLOCKS };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
  const shapes = wanTransformerTensorShapes(parseComponentConfig('WanTransformer3DModel', config, 'bench'));
  const tensors = randomWeights(shapes, 1, 'float32', (name, shape) =>
    /norm.*\.weight$/.test(name) ? 'one' : name.endsWith('.bias') ? 0.02 : fanInStd(shape),
  );
  writeSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), tensors);
  E.disposeAll(tensors);
  return config;
}

/** FLOPs of one block at L video tokens and S text tokens (width D, ffn F). */
function blockFlops(l: number, s: number, d: number, f: number): number {
  const selfAttn = 4 * 2 * l * d * d + 4 * l * l * d;
  const crossAttn = 2 * 2 * l * d * d + 2 * 2 * s * d * d + 4 * l * s * d;
  const ffn = 2 * 2 * l * d * f;
  return selfAttn + crossAttn + ffn;
}

const wan: BenchCase = async (ctx) => {
  const frames = ctx.quick ? [1, 4] : [4, 16];
  const dir = mkdtempSync(join(tmpdir(), 'nd-bench-wan-'));
  const rows: BenchRow[] = [];
  const ceiling = ctx.gemmGflops ?? ctx.peakGflops;
  const vs = ctx.gemmGflops ? 'gemm f32' : 'fma peak';
  try {
    const config = writeTransformer(dir);
    const model = await WanTransformer3DModel.load(dir);
    const d = model.innerDim;
    const ffn = config.ffn_dim as number;
    try {
      const text = E.scope(() => E.mul(E.randn([1, TEXT_TOKENS, config.text_dim as number], { seed: 5 }), 0.1));
      const timestep = E.tensor([999], [1], { dtype: 'int64' });
      for (const f of frames) {
        const latents = E.randn([1, 16, f, 64, 64], { seed: f });
        const tokens = f * 32 * 32;
        // a 16k-token pass runs for minutes on a small CPU: one timed run, no warm-up
        const long = tokens >= 16384;
        const ms = await timeIt(() => E.scope(() => void model.forward(latents, timestep, text)), ctx.quick || long ? 1 : 3, long ? 0 : 1);
        latents.dispose();
        const flops = BLOCKS * blockFlops(tokens, TEXT_TOKENS, d, ffn);
        const gflops = flops / ms / 1e6;
        rows.push({ group: 'wan', name: `DiT forward, 1.3B widths, ${BLOCKS} blocks, ${tokens} tokens`, ms, gflops, ratio: gflops / ceiling, vs });
        const perBlock = ms / BLOCKS;
        rows.push({
          group: 'wan',
          name: `DiT denoising step, 1.3B (${FULL_BLOCKS} blocks, CFG: 2 passes), ${tokens} tokens, extrapolated`,
          ms: 2 * FULL_BLOCKS * perBlock,
          note: `${perBlock.toFixed(0)} ms per block`,
        });
      }
      E.disposeAll([text, timestep]);
    } finally {
      model.dispose();
    }
    rows.push(
      ...torchRows(
        'wan',
        `
import torch.nn.functional as F
D, H, FF, T, S = ${d}, ${config.num_attention_heads as number}, ${ffn}, ${config.text_dim as number}, ${TEXT_TOKENS}
torch.manual_seed(0)
def lin(o, i): return (torch.randn(o, i) / i ** 0.5, torch.randn(o) * 0.02)
def attn_w(): return {k: lin(D, D) for k in ('q', 'k', 'v', 'o')} | {'nq': torch.ones(D), 'nk': torch.ones(D)}
blocks = [dict(a1=attn_w(), a2=attn_w(), n2=(torch.ones(D), torch.zeros(D)), f1=lin(FF, D), f2=lin(D, FF), sst=torch.randn(1, 6, D) / D ** 0.5) for _ in range(${BLOCKS})]
patch = lin(D, 64); t1 = lin(D, 256); t2 = lin(D, D); tp = lin(6 * D, D); x1 = lin(D, T); x2 = lin(D, D); po = lin(64, D); sst = torch.randn(1, 2, D) / D ** 0.5
def rms(x, w): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w
def rope(x, cos, sin):
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)
def attention(a, x, ctx, cs):
    B, L, _ = x.shape
    q = rms(F.linear(x, *a['q']), a['nq']).unflatten(2, (H, -1))
    k = rms(F.linear(ctx, *a['k']), a['nk']).unflatten(2, (H, -1))
    v = F.linear(ctx, *a['v']).unflatten(2, (H, -1))
    if cs is not None: q, k = rope(q, *cs), rope(k, *cs)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return F.linear(o.transpose(1, 2).flatten(2), *a['o'])
def forward(lat, t, txt):
    B, C, Fr, Hh, Ww = lat.shape
    x = lat.reshape(B, C, Fr, 1, Hh // 2, 2, Ww // 2, 2).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(B, -1, 64)
    x = F.linear(x, *patch); L = x.shape[1]
    half = 128; freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / half)
    te = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
    temb = F.linear(F.silu(F.linear(te, *t1)), *t2); mod = F.linear(F.silu(temb), *tp).unflatten(1, (6, -1))
    ctx = F.linear(F.gelu(F.linear(txt, *x1), approximate='tanh'), *x2)
    ang = torch.randn(L, 64); cs = (torch.cos(ang)[:, None], torch.sin(ang)[:, None])
    for b in blocks:
        sh, sc, g, csh, csc, cg = (b['sst'] + mod).chunk(6, 1)
        h = F.layer_norm(x, (D,)) * (1 + sc) + sh
        x = x + attention(b['a1'], h, h, cs) * g
        x = x + attention(b['a2'], F.layer_norm(x, (D,), *b['n2']), ctx, None)
        h = F.layer_norm(x, (D,)) * (1 + csc) + csh
        x = x + F.linear(F.gelu(F.linear(h, *b['f1']), approximate='tanh'), *b['f2']) * cg
    sh, sc = (sst + temb[:, None]).chunk(2, 1)
    return F.linear(F.layer_norm(x, (D,)) * (1 + sc) + sh, *po)
txt = torch.randn(1, S, T) * 0.1
for f in ${JSON.stringify(frames)}:
    lat = torch.randn(1, 16, f, 64, 64); L = f * 1024
    ms = bench(lambda: forward(lat, torch.tensor([999.0]), txt), ${ctx.quick ? 1 : 3} if L < 16384 else 1, 1 if L < 16384 else 0)
    flops = ${BLOCKS} * (4 * 2 * L * D * D + 4 * L * L * D + 2 * 2 * L * D * D + 2 * 2 * S * D * D + 4 * L * S * D + 2 * 2 * L * D * FF)
    rows.append({"name": f"DiT forward, 1.3B widths, ${BLOCKS} blocks, {L} tokens", "ms": ms, "gflops": flops / ms / 1e6})
`,
        ctx.threads,
        ceiling,
        vs,
      ),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
};

export default wan;
