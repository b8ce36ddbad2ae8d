// Z-Image-Turbo DiT denoising step at the real widths (3840 wide, 30 heads, SwiGLU 10240, captions
// 2560 wide) with 2 main layers and the real 2 + 2 refiner layers (random bf16 weights, as stored,
// under the real tensor names): one forward for 1024x1024 images (128x128 latents, 4096 image
// tokens) and a 100-token caption (padded to 128), per main layer, and the Turbo step of the full
// 30-layer model extrapolated from them (no CFG). GFLOP/s are counted over the projections,
// attention and feed-forward. Next to the same forward in PyTorch (float32 weights, as the reference
// runs on CPU) when torch is installed. Quick mode: 512x512 (1024 image tokens).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { zimageFfnDim, zimageTransformerTensorShapes } from '../../lib/models/zimage/layout.js';
import { ZImageTransformer2DModel } from '../../lib/models/zimage/transformer.js';
import { fanInStd } from '../../lib/pipelines/demo/weights.js';
import { type BenchCase, type BenchRow, timeIt } from '../lib.js';
import { inMemoryWeights } from '../random-weights.js';
import { torchRows } from '../torch.js';

const here = dirname(fileURLToPath(import.meta.url));
const REAL = join(here, '..', '..', 'test', 'fixtures', 'real-configs', 'Z-Image-Turbo', 'transformer', 'config.json');
const LAYERS = 2;
const FULL_LAYERS = 30;
const CAPTION_TOKENS = 100;

/** FLOPs of one block over L tokens (width D, SwiGLU hidden F): q/k/v/o, attention, w1/w3/w2. */
function blockFlops(l: number, d: number, f: number): number {
  return 4 * 2 * l * d * d + 4 * l * l * d + 3 * 2 * l * d * f;
}

/** Random bf16 weights under the real names, held in memory (1/sqrt(fan_in) matrices, unit norm gains, biases 0.02). */
function randomWeights(config: ReturnType<typeof parseComponentConfig<'ZImageTransformer2DModel'>>): ReturnType<typeof inMemoryWeights> {
  return inMemoryWeights(zimageTransformerTensorShapes(config), 'bfloat16', (name, shape) =>
    shape.length === 1 && name.endsWith('.weight') ? 'one' : name.endsWith('.bias') ? 0.02 : fanInStd(shape),
  );
}

const zimage: BenchCase = async (ctx) => {
  const side = ctx.quick ? 64 : 128; // latent side: 512 or 1024 pixels
  const raw = { ...(JSON.parse(readFileSync(REAL, 'utf8')) as Record<string, unknown>), n_layers: LAYERS };
  const config = parseComponentConfig('ZImageTransformer2DModel', raw, 'bench');
  const d = config.dim;
  const ffn = zimageFfnDim(config);
  const imageTokens = (side / 2) ** 2;
  const capPadded = Math.ceil(CAPTION_TOKENS / 32) * 32;
  const unified = imageTokens + capPadded;
  const ceiling = ctx.gemmGflops ?? ctx.peakGflops;
  const vs = ctx.gemmGflops ? 'gemm f32' : 'fma peak';
  const rows: BenchRow[] = [];
  const { source, tensors } = randomWeights(config);
  const model = new ZImageTransformer2DModel(source, config);
  try {
    const latents = E.randn([16, 1, side, side], { seed: 1 });
    const caption = E.scope(() => E.mul(E.randn([CAPTION_TOKENS, config.cap_feat_dim], { seed: 2 }), 0.5));
    const t = E.tensor([0.5], [1]);
    // a forward at 4k tokens runs for minutes on a small CPU: one timed run, no warm-up
    const ms = await timeIt(() => E.scope(() => void model.forward([latents], t, [caption])), 1, ctx.quick ? 1 : 0);
    E.disposeAll([latents, caption, t]);
    const refinerFlops = config.n_refiner_layers * (blockFlops(imageTokens, d, ffn) + blockFlops(capPadded, d, ffn));
    const mainFlops = blockFlops(unified, d, ffn);
    const flops = refinerFlops + LAYERS * mainFlops;
    const gflops = flops / ms / 1e6;
    const size = `${side * 8}x${side * 8}, ${imageTokens} image + ${capPadded} caption tokens`;
    rows.push({ group: 'zimage', name: `DiT forward, Turbo widths, ${LAYERS} layers + 2+2 refiners, ${size}`, ms, gflops, ratio: gflops / ceiling, vs });
    // the main layers' share of the time, by their share of the FLOPs
    const perLayer = (ms * mainFlops) / flops;
    rows.push({
      group: 'zimage',
      name: `DiT denoising step, Turbo (${FULL_LAYERS} layers, no CFG), ${size}, extrapolated`,
      ms: ms + (FULL_LAYERS - LAYERS) * perLayer,
      note: `${perLayer.toFixed(0)} ms per main layer; 9 steps ${((9 * (ms + (FULL_LAYERS - LAYERS) * perLayer)) / 1000).toFixed(0)} s`,
    });
  } finally {
    model.dispose();
    E.disposeAll([...tensors.values()]);
  }
  rows.push(
    ...torchRows(
      'zimage',
      `
import math
import torch.nn.functional as F
D, H, FF, CAP, NREF, NL = ${d}, ${config.n_heads}, ${ffn}, ${config.cap_feat_dim}, ${config.n_refiner_layers}, ${LAYERS}
HD = D // H; AX = ${JSON.stringify(config.axes_dims)}
torch.manual_seed(0)
def lin(o, i, bias=True): return (torch.randn(o, i) / i ** 0.5, torch.randn(o) * 0.02 if bias else None)
def block(mod):
    b = {k: lin(D, D, False) for k in ('q', 'k', 'v', 'o')} | {'w1': lin(FF, D, False), 'w2': lin(D, FF, False), 'w3': lin(FF, D, False)}
    b |= {k: torch.ones(D) for k in ('n1', 'n2', 'f1', 'f2')} | {'nq': torch.ones(HD), 'nk': torch.ones(HD)}
    if mod: b['ada'] = lin(4 * D, 256)
    return b
noise = [block(True) for _ in range(NREF)]; ctx = [block(False) for _ in range(NREF)]; layers = [block(True) for _ in range(NL)]
xe = lin(D, 64); t1 = lin(1024, 256); t2 = lin(256, 1024); capn = torch.ones(CAP); cape = lin(D, CAP); fa = lin(D, 256); fl = lin(64, D)
xpad = torch.randn(1, D); cpad = torch.randn(1, D)
def rms(x, w, eps=1e-5): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
def freqs(pos):
    out = []
    for i, d in enumerate(AX):
        f = 1.0 / (256.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        out.append(torch.polar(torch.ones(len(pos), d // 2), torch.outer(pos[:, i].double(), f).float()))
    return torch.cat(out, -1)
def rope(x, fc): return torch.view_as_real(torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2)) * fc[None, :, None]).flatten(3)
def attention(b, x, fc):
    B, L, _ = x.shape
    q = rope(rms(F.linear(x, b['q'][0]).unflatten(2, (H, HD)), b['nq']), fc)
    k = rope(rms(F.linear(x, b['k'][0]).unflatten(2, (H, HD)), b['nk']), fc)
    v = F.linear(x, b['v'][0]).unflatten(2, (H, HD))
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return F.linear(o.transpose(1, 2).flatten(2), b['o'][0])
def run_block(b, x, fc, adaln):
    ff = lambda h: F.linear(F.silu(F.linear(h, b['w1'][0])) * F.linear(h, b['w3'][0]), b['w2'][0])
    if adaln is None:
        x = x + rms(attention(b, rms(x, b['n1']), fc), b['n2'])
        return x + rms(ff(rms(x, b['f1'])), b['f2'])
    sa, ga, sm, gm = F.linear(adaln, *b['ada']).unsqueeze(1).chunk(4, 2)
    x = x + torch.tanh(ga) * rms(attention(b, rms(x, b['n1']) * (1 + sa), fc), b['n2'])
    return x + torch.tanh(gm) * rms(ff(rms(x, b['f1']) * (1 + sm)), b['f2'])
def forward(lat, t, cap):
    C, Fr, Hh, Ww = lat.shape
    half = 128; fr = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    a = (t * 1000)[:, None] * fr[None]
    adaln = F.linear(F.silu(F.linear(torch.cat([torch.cos(a), torch.sin(a)], -1), *t1)), *t2)
    x = lat.view(C, 1, 1, Hh // 2, 2, Ww // 2, 2).permute(1, 3, 5, 2, 4, 6, 0).reshape(-1, 64)
    n = x.shape[0]; npad = (-n) % 32; lc = cap.shape[0]; cpadn = (-lc) % 32; lcp = lc + cpadn
    x = torch.cat([F.linear(x, *xe), xpad.expand(npad, D)])[None]
    gh, gw = torch.meshgrid(torch.arange(Hh // 2), torch.arange(Ww // 2), indexing='ij')
    ipos = torch.stack([torch.full_like(gh, lcp + 1), gh, gw], -1).reshape(-1, 3)
    ipos = torch.cat([ipos, torch.zeros(npad, 3, dtype=ipos.dtype)])
    cpos = torch.stack([torch.arange(1, lcp + 1), torch.zeros(lcp, dtype=torch.long), torch.zeros(lcp, dtype=torch.long)], -1)
    fi, fcap = freqs(ipos), freqs(cpos)
    for b in noise: x = run_block(b, x, fi, adaln)
    c = torch.cat([F.linear(rms(cap, capn), *cape), cpad.expand(cpadn, D)])[None]
    for b in ctx: c = run_block(b, c, fcap, None)
    u = torch.cat([x, c], 1); fu = torch.cat([fi, fcap])
    for b in layers: u = run_block(b, u, fu, adaln)
    out = F.linear(F.layer_norm(u, (D,), eps=1e-6) * (1 + F.linear(F.silu(adaln), *fa)).unsqueeze(1), *fl)
    return out[0, :n]
lat = torch.randn(16, 1, ${side}, ${side}); cap = torch.randn(${CAPTION_TOKENS}, CAP) * 0.5
ms = bench(lambda: forward(lat, torch.tensor([0.5]), cap), 1, ${ctx.quick ? 1 : 0})
def bf(l): return 4 * 2 * l * D * D + 4 * l * l * D + 3 * 2 * l * D * FF
flops = NREF * (bf(${imageTokens}) + bf(${capPadded})) + NL * bf(${unified})
rows.append({"name": "DiT forward, Turbo widths, ${LAYERS} layers + 2+2 refiners, ${side * 8}x${side * 8}, ${imageTokens} image + ${capPadded} caption tokens (float32 weights)", "ms": ms, "gflops": flops / ms / 1e6})
`,
      ctx.threads,
      ceiling,
      vs,
    ),
  );
  return rows;
};

export default zimage;
