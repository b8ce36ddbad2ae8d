// FLUX.2-klein-4B DiT denoising step at the real widths (3072 wide, 24 heads of 128, SwiGLU 9216,
// text 7680 wide) with 2 double-stream and 2 single-stream blocks (random bf16 weights, as stored,
// under the real tensor names): one forward for 1024x1024 (64x64 packed tokens, 4096 image tokens)
// with the pipeline's 512 text tokens, without and with one 1024x1024 reference image (4096 more
// image tokens at t = 10), per block, and the step of the full 5 + 20-block klein-4B extrapolated from
// them (no CFG: klein-4B is step-distilled). GFLOP/s are counted over the projections, attention and
// feed-forward. Next to the same forward in PyTorch (float32 weights, as the reference runs on CPU)
// when torch is installed. Quick mode: 512x512 (1024 image tokens, and 1024 reference tokens).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { flux2TransformerTensorShapes, flux2Widths } from '../../lib/models/flux2/layout.js';
import { concatIds, latentIds, referenceIds, textIds } from '../../lib/models/flux2/tokens.js';
import { Flux2Transformer2DModel } from '../../lib/models/flux2/transformer.js';
import { fanInStd } from '../../lib/pipelines/demo/weights.js';
import { FLUX2_MAX_SEQUENCE_LENGTH } from '../../lib/pipelines/flux2-klein.js';
import { cpuNote, timeWithCpu } from '../cpu-time.js';
import { type BenchCase, type BenchRow } from '../lib.js';
import { inMemoryWeights } from '../random-weights.js';
import { torchRows } from '../torch.js';

const here = dirname(fileURLToPath(import.meta.url));
const REAL = join(here, '..', '..', 'test', 'fixtures', 'real-configs', 'FLUX.2-klein-4B', 'transformer', 'config.json');
const DOUBLE = 2;
const SINGLE = 2;
const FULL_DOUBLE = 5;
const FULL_SINGLE = 20;

/**
 * FLOPs of one block over T tokens (width D, SwiGLU hidden F): double- and single-stream blocks both
 * spend 8 D^2 (q, k, v, out) + 6 D F (SwiGLU in and out) per token, plus 4 T^2 D in attention.
 */
function blockFlops(tokens: number, d: number, f: number): number {
  return tokens * (8 * d * d + 6 * d * f) + 4 * tokens * tokens * d;
}

type Flux2Config = ReturnType<typeof parseComponentConfig<'Flux2Transformer2DModel'>>;

/** Random bf16 weights under the real names, held in memory (1/sqrt(fan_in) matrices, unit norm gains). */
function randomWeights(config: Flux2Config): ReturnType<typeof inMemoryWeights> {
  return inMemoryWeights(flux2TransformerTensorShapes(config), 'bfloat16', (_, shape) => (shape.length === 1 ? 'one' : fanInStd(shape)));
}

const flux2: BenchCase = async (ctx) => {
  const side = ctx.quick ? 32 : 64; // packed token grid: 512 or 1024 pixels
  const raw = { ...(JSON.parse(readFileSync(REAL, 'utf8')) as Record<string, unknown>), num_layers: DOUBLE, num_single_layers: SINGLE };
  const config = parseComponentConfig('Flux2Transformer2DModel', raw, 'bench');
  const { inner: d, mlpHidden: f } = flux2Widths(config);
  const imageTokens = side * side;
  const text = FLUX2_MAX_SEQUENCE_LENGTH;
  const ceiling = ctx.gemmGflops ?? ctx.peakGflops;
  const vs = ctx.gemmGflops ? 'gemm f32' : 'fma peak';
  const pixels = `${side * 16}x${side * 16}`;
  const rows: BenchRow[] = [];
  const { source, tensors } = randomWeights(config);
  const model = new Flux2Transformer2DModel(source, config);
  try {
    const context = E.scope(() => E.mul(E.randn([1, text, config.joint_attention_dim], { seed: 2 }), 0.5));
    const t = E.tensor([0.5], [1]);
    for (const references of [0, 1]) {
      const tokens = imageTokens * (1 + references);
      const hidden = E.randn([1, tokens, config.in_channels], { seed: 1 });
      const ids = references ? concatIds([latentIds(side, side), referenceIds([[side, side]])]) : latentIds(side, side);
      const rotary = model.rotaryTables(textIds(text), ids, 'cpu');
      // a forward at 4k+ tokens runs for minutes on a small CPU: one timed run, no warm-up
      const timing = await timeWithCpu(() => E.scope(() => void model.forward(hidden, context, t, ids, textIds(text), null, rotary)), 1, ctx.quick ? 1 : 0);
      const ms = timing.ms;
      E.disposeAll([hidden, rotary.cos, rotary.sin]);
      const perBlock = blockFlops(tokens + text, d, f);
      const flops = (DOUBLE + SINGLE) * perBlock;
      const gflops = flops / ms / 1e6;
      const what = references ? `${pixels} + 1 reference, ${imageTokens} + ${imageTokens} image + ${text} text tokens` : `${pixels}, ${imageTokens} image + ${text} text tokens`;
      const note = cpuNote(gflops, timing, ctx.peakOneGflops ?? ctx.peakGflops / ctx.threads);
      rows.push({ group: 'flux2', name: `DiT forward, klein-4B widths, ${DOUBLE}+${SINGLE} blocks, ${what}`, ms, gflops, ratio: gflops / ceiling, vs, note });
      // the blocks' share of the time, by their share of the FLOPs (embedders and modulation are small)
      const msPerBlock = ms / (DOUBLE + SINGLE);
      const step = ms + (FULL_DOUBLE + FULL_SINGLE - DOUBLE - SINGLE) * msPerBlock;
      rows.push({
        group: 'flux2',
        name: `DiT denoising step, klein-4B (${FULL_DOUBLE}+${FULL_SINGLE} blocks, no CFG), ${what}, extrapolated`,
        ms: step,
        note: `${msPerBlock.toFixed(0)} ms per block; 4 steps ${((4 * step) / 1000).toFixed(0)} s`,
      });
    }
    E.disposeAll([context, t]);
  } finally {
    model.dispose();
    E.disposeAll([...tensors.values()]);
  }
  rows.push(
    ...torchRows(
      'flux2',
      `
import math
import torch.nn.functional as F
D, H, FF, J, ND, NS, TXT, SIDE = ${d}, ${config.num_attention_heads}, ${f}, ${config.joint_attention_dim}, ${DOUBLE}, ${SINGLE}, ${text}, ${side}
HD = D // H; AX = ${JSON.stringify(config.axes_dims_rope)}; EPS = 1e-6
torch.manual_seed(0)
def w(o, i): return torch.randn(o, i) / i ** 0.5
dbl = [dict(q=w(D, D), k=w(D, D), v=w(D, D), o=w(D, D), aq=w(D, D), ak=w(D, D), av=w(D, D), ao=w(D, D),
            fi=w(2 * FF, D), fo=w(D, FF), ci=w(2 * FF, D), co=w(D, FF), nq=torch.ones(HD), nk=torch.ones(HD), naq=torch.ones(HD), nak=torch.ones(HD))
       for _ in range(ND)]
sgl = [dict(p=w(3 * D + 2 * FF, D), o=w(D, D + FF), nq=torch.ones(HD), nk=torch.ones(HD)) for _ in range(NS)]
t1, t2 = w(D, 256), w(D, D); mimg, mtxt, msgl = w(6 * D, D), w(6 * D, D), w(3 * D, D)
xe, ce, no, po = w(D, 128), w(D, J), w(2 * D, D), w(128, D)
def rms(x, wt): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * wt
def ln(x): return F.layer_norm(x, (D,), eps=EPS)
def freqs(ids):
    cs, ss = [], []
    for i, d in enumerate(AX):
        fr = 1.0 / (2000 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        a = torch.outer(ids[:, i].double(), fr)
        cs.append(a.cos().repeat_interleave(2, 1).float()); ss.append(a.sin().repeat_interleave(2, 1).float())
    return torch.cat(cs, -1), torch.cat(ss, -1)
def rope(x, cs):
    c, s = cs; xr, xi = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rot = torch.stack([-xi, xr], -1).flatten(3)
    return x * c[None, :, None] + rot * s[None, :, None]
def attn(q, k, v, cs):
    q, k = rope(q, cs), rope(k, cs)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2).flatten(2)
def heads(x): return x.unflatten(-1, (H, HD))
def swiglu(x): a, b = x.chunk(2, -1); return F.silu(a) * b
def forward(x, c, t, ids_img, ids_txt):
    half = 128; fr = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    a = (t * 1000)[:, None] * fr[None]
    temb = F.linear(F.silu(F.linear(torch.cat([torch.cos(a), torch.sin(a)], -1), t1)), t2)
    act = F.silu(temb)
    mi = F.linear(act, mimg)[:, None].chunk(6, -1); mt = F.linear(act, mtxt)[:, None].chunk(6, -1); ms = F.linear(act, msgl)[:, None].chunk(3, -1)
    cs = freqs(torch.cat([ids_txt, ids_img]))
    x = F.linear(x, xe); c = F.linear(c, ce); L = c.shape[1]
    for b in dbl:
        nx = ln(x) * (1 + mi[1]) + mi[0]; nc = ln(c) * (1 + mt[1]) + mt[0]
        q = torch.cat([rms(heads(F.linear(nc, b['aq'])), b['naq']), rms(heads(F.linear(nx, b['q'])), b['nq'])], 1)
        k = torch.cat([rms(heads(F.linear(nc, b['ak'])), b['nak']), rms(heads(F.linear(nx, b['k'])), b['nk'])], 1)
        v = torch.cat([heads(F.linear(nc, b['av'])), heads(F.linear(nx, b['v']))], 1)
        o = attn(q, k, v, cs)
        x = x + mi[2] * F.linear(o[:, L:], b['o']); x = x + mi[5] * F.linear(swiglu(F.linear(ln(x) * (1 + mi[4]) + mi[3], b['fi'])), b['fo'])
        c = c + mt[2] * F.linear(o[:, :L], b['ao']); c = c + mt[5] * F.linear(swiglu(F.linear(ln(c) * (1 + mt[4]) + mt[3], b['ci'])), b['co'])
    h = torch.cat([c, x], 1)
    for b in sgl:
        nh = ln(h) * (1 + ms[1]) + ms[0]
        p = F.linear(nh, b['p']); qkv, mlp = p.split([3 * D, 2 * FF], -1); q, k, v = qkv.chunk(3, -1)
        o = attn(rms(heads(q), b['nq']), rms(heads(k), b['nk']), heads(v), cs)
        h = h + ms[2] * F.linear(torch.cat([o, swiglu(mlp)], -1), b['o'])
    sc, sh = F.linear(act, no).chunk(2, -1)
    return F.linear((ln(h) * (1 + sc[:, None]) + sh[:, None])[:, L:], po)
def grid(t0):
    gh, gw = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing='ij')
    return torch.stack([torch.full_like(gh, t0), gh, gw, torch.zeros_like(gh)], -1).reshape(-1, 4)
ids_txt = torch.stack([torch.zeros(TXT, dtype=torch.long)] * 3 + [torch.arange(TXT)], -1)
c = torch.randn(1, TXT, J) * 0.5
def bf(tk): return tk * (8 * D * D + 6 * D * FF) + 4 * tk * tk * D
for refs in (0, 1):
    ids = torch.cat([grid(0)] + [grid(10)] * refs); n = ids.shape[0]
    x = torch.randn(1, n, 128)
    ms_ = bench(lambda: forward(x, c, torch.tensor([0.5]), ids, ids_txt), 1, ${ctx.quick ? 1 : 0})
    what = "${pixels} + 1 reference, %d + %d image + %d text tokens" % (SIDE * SIDE, SIDE * SIDE, TXT) if refs else "${pixels}, %d image + %d text tokens" % (SIDE * SIDE, TXT)
    rows.append({"name": "DiT forward, klein-4B widths, %d+%d blocks, %s (float32 weights)" % (ND, NS, what), "ms": ms_, "gflops": (ND + NS) * bf(n + TXT) / ms_ / 1e6})
`,
      ctx.threads,
      ceiling,
      vs,
    ),
  );
  return rows;
};

export default flux2;
