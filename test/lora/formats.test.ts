// LoRA key formats: every accepted naming resolved onto the right layer with the right rank, alpha and
// scale, fused original projections split by rows, and every kind of bad file refused with the first
// offending key named.
import t, { type Test } from 'tap';

import * as E from '../../lib/engine/index.js';
import { LoraError, type LoraStateDict, type LoraTargetLayout, resolveLora } from '../../lib/lora/formats.js';

type Shape2 = readonly [number, number];

function layout(modules: Record<string, Shape2>, model = 'TestDiT'): LoraTargetLayout {
  return { model, modules: new Map(Object.entries(modules)) };
}

let seed = 1;
const rand = (shape: number[], dtype: E.DType = 'float32') => E.keep(E.scope(() => E.randn(shape, { seed: seed++ }).to(dtype)));
const scalar = (v: number) => E.keep(E.tensor([v], []));

function stateDict(entries: Array<[string, E.Tensor]>, metadata: Record<string, string> = {}): LoraStateDict {
  return { source: 'test.safetensors', tensors: new Map(entries), metadata };
}

/** Resolves and returns [key, module, rank, alpha, scale] rows (sorted by module). */
function rows(sd: LoraStateDict, l: LoraTargetLayout) {
  const r = resolveLora(sd, l);
  const out = r.layers.map((x) => [x.key, x.module, x.rank, x.alpha, x.scale] as const).sort((a, b) => (a[1] < b[1] ? -1 : 1));
  r.dispose();
  return out;
}

function throwsKey(tt: Test, fn: () => unknown, key: string | null, message: RegExp, what: string) {
  try {
    fn();
    tt.fail(`${what}: no error`);
  } catch (err) {
    tt.ok(err instanceof LoraError, `${what}: LoraError`);
    tt.equal((err as LoraError).key, key, `${what}: names key ${key}`);
    tt.match((err as Error).message, message, `${what}: message`);
  }
}

const WAN = layout({
  'blocks.0.attn1.to_q': [8, 8],
  'blocks.0.attn1.to_out.0': [8, 8],
  'blocks.0.attn2.to_k': [8, 8],
  'blocks.0.ffn.net.0.proj': [16, 8],
  'blocks.0.ffn.net.2': [8, 16],
  'condition_embedder.time_embedder.linear_1': [8, 4],
  'condition_embedder.time_proj': [48, 8],
  'condition_embedder.text_embedder.linear_2': [8, 8],
  proj_out: [16, 8],
  'patch_embedding': [8, 12],
});

t.test('diffusers / PEFT keys: prefixes, alpha from the PEFT metadata, alpha_pattern, rsLoRA, alpha = rank without either', async (tt) => {
  const a = rand([2, 8]);
  const b = rand([8, 2]);
  const c = rand([2, 8]);
  const d = rand([16, 2]);
  const plain = stateDict([
    ['transformer.blocks.0.attn1.to_q.lora_A.weight', a],
    ['transformer.blocks.0.attn1.to_q.lora_B.weight', b],
    ['blocks.0.ffn.net.0.proj.lora_A.weight', c],
    ['base_model.model.blocks.0.ffn.net.0.proj.lora_B.weight', d],
  ]);
  tt.same(rows(plain, WAN), [
    ['transformer.blocks.0.attn1.to_q.lora_A.weight', 'blocks.0.attn1.to_q', 2, 2, 1],
    ['blocks.0.ffn.net.0.proj.lora_A.weight', 'blocks.0.ffn.net.0.proj', 2, 2, 1],
  ], 'no metadata: alpha = rank, scale 1');

  const meta = (cfg: Record<string, unknown>) => ({ lora_adapter_metadata: JSON.stringify(cfg) });
  const withAlpha = stateDict([...plain.tensors], meta({ 'transformer.r': 2, 'transformer.lora_alpha': 8, 'transformer.alpha_pattern': { 'ffn.net.0.proj': 3 } }));
  tt.same(rows(withAlpha, WAN).map((r) => [r[1], r[3], r[4]]), [
    ['blocks.0.attn1.to_q', 8, 4],
    ['blocks.0.ffn.net.0.proj', 3, 1.5],
  ], 'lora_alpha / r, alpha_pattern by module suffix');
  const rs = stateDict([...plain.tensors], meta({ r: 2, lora_alpha: 4, use_rslora: true }));
  tt.same(rows(rs, WAN).map((r) => r[4]), [4 / Math.SQRT2, 4 / Math.SQRT2], 'rsLoRA: alpha / sqrt(r), unprefixed config keys');
  throwsKey(tt, () => resolveLora(stateDict([...plain.tensors], meta({ use_dora: true })), WAN), null, /DoRA/, 'use_dora');
  throwsKey(tt, () => resolveLora(stateDict([...plain.tensors], { lora_adapter_metadata: '{oops' }), WAN), null, /not valid JSON/, 'bad metadata JSON');
});

t.test('kohya / ComfyUI: original Wan names with diffusion_model. and lora_unet_ prefixes, alpha tensors, bf16 weights', async (tt) => {
  const sd = stateDict([
    ['diffusion_model.blocks.0.self_attn.q.lora_down.weight', rand([4, 8], 'bfloat16')],
    ['diffusion_model.blocks.0.self_attn.q.lora_up.weight', rand([8, 4], 'bfloat16')],
    ['diffusion_model.blocks.0.self_attn.q.alpha', scalar(2)],
    ['diffusion_model.blocks.0.self_attn.o.lora_down.weight', rand([4, 8])],
    ['diffusion_model.blocks.0.self_attn.o.lora_up.weight', rand([8, 4])],
    ['lora_unet_blocks_0_cross_attn_k.lora_down.weight', rand([4, 8])],
    ['lora_unet_blocks_0_cross_attn_k.lora_up.weight', rand([8, 4])],
    ['lora_unet_blocks_0_cross_attn_k.alpha', scalar(8)],
    ['diffusion_model.blocks.0.ffn.0.lora.down.weight', rand([4, 8])],
    ['diffusion_model.blocks.0.ffn.0.lora.up.weight', rand([16, 4])],
    ['diffusion_model.blocks.0.ffn.2.lora_down.weight', rand([4, 16])],
    ['diffusion_model.blocks.0.ffn.2.lora_up.weight', rand([8, 4])],
    ['diffusion_model.head.head.lora_down.weight', rand([4, 8])],
    ['diffusion_model.head.head.lora_up.weight', rand([16, 4])],
    ['diffusion_model.time_embedding.0.lora_down.weight', rand([4, 4])],
    ['diffusion_model.time_embedding.0.lora_up.weight', rand([8, 4])],
    ['diffusion_model.time_projection.1.lora_down.weight', rand([4, 8])],
    ['diffusion_model.time_projection.1.lora_up.weight', rand([48, 4])],
    ['lora_unet_text_embedding_2.lora_down.weight', rand([4, 8])],
    ['lora_unet_text_embedding_2.lora_up.weight', rand([8, 4])],
  ]);
  const r = resolveLora(sd, WAN);
  tt.same(r.styles, ['kohya'], 'down/up pairs');
  tt.same(r.namings, ['original'], 'original names');
  const got = Object.fromEntries(r.layers.map((l) => [l.key.replace(/\.lora[._]down\.weight$/, ''), [l.module, l.scale]]));
  tt.same(got, {
    'diffusion_model.blocks.0.self_attn.q': ['blocks.0.attn1.to_q', 0.5],
    'diffusion_model.blocks.0.self_attn.o': ['blocks.0.attn1.to_out.0', 1],
    lora_unet_blocks_0_cross_attn_k: ['blocks.0.attn2.to_k', 2],
    'diffusion_model.blocks.0.ffn.0': ['blocks.0.ffn.net.0.proj', 1],
    'diffusion_model.blocks.0.ffn.2': ['blocks.0.ffn.net.2', 1],
    'diffusion_model.head.head': ['proj_out', 1],
    'diffusion_model.time_embedding.0': ['condition_embedder.time_embedder.linear_1', 1],
    'diffusion_model.time_projection.1': ['condition_embedder.time_proj', 1],
    lora_unet_text_embedding_2: ['condition_embedder.text_embedder.linear_2', 1],
  });
  r.dispose();
});

t.test('lora_unet_ names are matched against the real modules; a name two modules share is refused', async (tt) => {
  const zimage = layout({
    'layers.0.attention.to_out.0': [8, 8],
    'layers.1.adaLN_modulation.0': [32, 8],
    'context_refiner.0.feed_forward.w1': [21, 8],
    'all_x_embedder.2-1': [8, 64],
  });
  const sd = stateDict([
    ['lora_unet_layers_0_attention_to_out_0.lora_down.weight', rand([2, 8])],
    ['lora_unet_layers_0_attention_to_out_0.lora_up.weight', rand([8, 2])],
    ['lora_unet_layers_1_adaLN_modulation_0.lora_down.weight', rand([2, 8])],
    ['lora_unet_layers_1_adaLN_modulation_0.lora_up.weight', rand([32, 2])],
    ['lora_unet_context_refiner_0_feed_forward_w1.lora_down.weight', rand([2, 8])],
    ['lora_unet_context_refiner_0_feed_forward_w1.lora_up.weight', rand([21, 2])],
    ['lora_unet_all_x_embedder_2-1.lora_down.weight', rand([2, 64])],
    ['lora_unet_all_x_embedder_2-1.lora_up.weight', rand([8, 2])],
  ]);
  tt.same(rows(sd, zimage).map((r) => r[1]), ['all_x_embedder.2-1', 'context_refiner.0.feed_forward.w1', 'layers.0.attention.to_out.0', 'layers.1.adaLN_modulation.0']);

  const clash = layout({ 'a.b_c': [4, 4], 'a_b.c': [4, 4] });
  const sdClash = stateDict([
    ['lora_unet_a_b_c.lora_down.weight', rand([2, 4])],
    ['lora_unet_a_b_c.lora_up.weight', rand([4, 2])],
  ]);
  throwsKey(tt, () => resolveLora(sdClash, clash), 'lora_unet_a_b_c.lora_down.weight', /more than one layer/, 'ambiguous underscores');
  const dotted = stateDict([
    ['a.b_c.lora_A.weight', rand([2, 4])],
    ['a.b_c.lora_B.weight', rand([4, 2])],
  ]);
  tt.same(rows(dotted, clash).map((r) => r[1]), ['a.b_c'], 'the dotted name is not ambiguous');
});

t.test('Z-Image original names: attention.out, and the fused attention.qkv split over to_q/to_k/to_v with A shared', async (tt) => {
  const zimage = layout({
    'layers.0.attention.to_q': [8, 8],
    'layers.0.attention.to_k': [8, 8],
    'layers.0.attention.to_v': [8, 8],
    'layers.0.attention.to_out.0': [8, 8],
  });
  const down = rand([2, 8]);
  const up = rand([24, 2]);
  const sd = stateDict([
    ['diffusion_model.layers.0.attention.qkv.lora_A.weight', down],
    ['diffusion_model.layers.0.attention.qkv.lora_B.weight', up],
    ['diffusion_model.layers.0.attention.out.lora_A.weight', rand([2, 8])],
    ['diffusion_model.layers.0.attention.out.lora_B.weight', rand([8, 2])],
  ]);
  const r = resolveLora(sd, zimage);
  const byModule = new Map(r.layers.map((l) => [l.module, l]));
  tt.same([...byModule.keys()].sort(), ['layers.0.attention.to_k', 'layers.0.attention.to_out.0', 'layers.0.attention.to_q', 'layers.0.attention.to_v']);
  const upRows = up.toArray();
  ['to_q', 'to_k', 'to_v'].forEach((p, i) => {
    const l = byModule.get(`layers.0.attention.${p}`)!;
    tt.equal(l.down, down, `${p}: A shared`);
    tt.same(l.up.toArray(), upRows.slice(i * 16, (i + 1) * 16), `${p}: rows ${i * 8}..${i * 8 + 7} of B`);
  });
  r.dispose();
});

t.test('FLUX.2 original names: img/txt qkv split, single-block linear1/linear2, the final layer with its halves swapped', async (tt) => {
  const flux = layout({
    'transformer_blocks.0.attn.to_q': [8, 8],
    'transformer_blocks.0.attn.to_k': [8, 8],
    'transformer_blocks.0.attn.to_v': [8, 8],
    'transformer_blocks.0.attn.add_q_proj': [8, 8],
    'transformer_blocks.0.attn.add_k_proj': [8, 8],
    'transformer_blocks.0.attn.add_v_proj': [8, 8],
    'transformer_blocks.0.ff.linear_in': [32, 8],
    'single_transformer_blocks.0.attn.to_qkv_mlp_proj': [56, 8],
    'single_transformer_blocks.0.attn.to_out': [8, 24],
    'norm_out.linear': [16, 8],
    proj_out: [4, 8],
  });
  const finalUp = rand([16, 2]);
  const sd = stateDict([
    ['diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight', rand([2, 8])],
    ['diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight', rand([24, 2])],
    ['diffusion_model.double_blocks.0.txt_attn.qkv.lora_A.weight', rand([2, 8])],
    ['diffusion_model.double_blocks.0.txt_attn.qkv.lora_B.weight', rand([24, 2])],
    ['lora_unet_double_blocks_0_img_mlp_0.lora_down.weight', rand([2, 8])],
    ['lora_unet_double_blocks_0_img_mlp_0.lora_up.weight', rand([32, 2])],
    ['diffusion_model.single_blocks.0.linear1.lora_A.weight', rand([2, 8])],
    ['diffusion_model.single_blocks.0.linear1.lora_B.weight', rand([56, 2])],
    ['diffusion_model.single_blocks.0.linear2.lora_A.weight', rand([2, 24])],
    ['diffusion_model.single_blocks.0.linear2.lora_B.weight', rand([8, 2])],
    ['diffusion_model.final_layer.adaLN_modulation.1.lora_A.weight', rand([2, 8])],
    ['diffusion_model.final_layer.adaLN_modulation.1.lora_B.weight', finalUp],
    ['diffusion_model.final_layer.linear.lora_A.weight', rand([2, 8])],
    ['diffusion_model.final_layer.linear.lora_B.weight', rand([4, 2])],
  ]);
  const r = resolveLora(sd, flux);
  tt.same(r.layers.map((l) => l.module).sort(), [...flux.modules.keys()].sort(), 'every layer reached');
  const norm = r.layers.find((l) => l.module === 'norm_out.linear')!;
  const u = finalUp.toArray();
  tt.same(norm.up.toArray(), [...u.slice(16), ...u.slice(0, 16)], 'norm_out: (shift, scale) rows reordered to (scale, shift)');
  r.dispose();
});

t.test('a conv LoRA (patch embedding) flattens onto the [out, in * kernel] weight', async (tt) => {
  const sd = stateDict([
    ['transformer.patch_embedding.lora_A.weight', rand([2, 3, 1, 2, 2])],
    ['transformer.patch_embedding.lora_B.weight', rand([8, 2, 1, 1, 1])],
  ]);
  const r = resolveLora(sd, WAN);
  tt.same(r.layers[0]!.down.shape, [2, 12]);
  tt.same(r.layers[0]!.up.shape, [8, 2]);
  r.dispose();
});

t.test('bad files are refused with the first offending key, in file order', async (tt) => {
  const ok: Array<[string, E.Tensor]> = [
    ['transformer.blocks.0.attn1.to_q.lora_A.weight', rand([2, 8])],
    ['transformer.blocks.0.attn1.to_q.lora_B.weight', rand([8, 2])],
  ];
  const cases: Array<[string, Array<[string, E.Tensor]>, string | null, RegExp]> = [
    ['unknown key', [...ok, ['transformer.blocks.0.attn1.to_q.weight', rand([8, 8])]], 'transformer.blocks.0.attn1.to_q.weight', /not a LoRA tensor/],
    ['another model', [['transformer.layers.0.attention.to_q.lora_A.weight', rand([2, 8])], ...ok], 'transformer.layers.0.attention.to_q.lora_A.weight', /does not have/],
    ['in features', [['transformer.blocks.0.attn1.to_q.lora_A.weight', rand([2, 6])], ok[1]!], 'transformer.blocks.0.attn1.to_q.lora_A.weight', /takes 8 inputs/],
    ['out features', [ok[0]!, ['transformer.blocks.0.attn1.to_q.lora_B.weight', rand([6, 2])]], 'transformer.blocks.0.attn1.to_q.lora_B.weight', /has 8 outputs/],
    ['rank', [ok[0]!, ['transformer.blocks.0.attn1.to_q.lora_B.weight', rand([8, 3])]], 'transformer.blocks.0.attn1.to_q.lora_B.weight', /rank 2/],
    ['1-D', [['transformer.blocks.0.attn1.to_q.lora_A.weight', rand([16])], ok[1]!], 'transformer.blocks.0.attn1.to_q.lora_A.weight', /2-D/],
    ['int dtype', [['transformer.blocks.0.attn1.to_q.lora_A.weight', E.keep(E.zeros([2, 8], { dtype: 'int32' }))], ok[1]!], 'transformer.blocks.0.attn1.to_q.lora_A.weight', /int32/],
    ['alpha shape', [...ok, ['transformer.blocks.0.attn1.to_q.alpha', rand([2])]], 'transformer.blocks.0.attn1.to_q.alpha', /one floating-point number/],
    ['alpha NaN', [...ok, ['transformer.blocks.0.attn1.to_q.alpha', scalar(Number.NaN)]], 'transformer.blocks.0.attn1.to_q.alpha', /alpha is NaN/],
    ['missing up', [ok[0]!], 'transformer.blocks.0.attn1.to_q.lora_A.weight', /no matching up/],
    ['missing down', [ok[1]!], 'transformer.blocks.0.attn1.to_q.lora_B.weight', /no matching down/],
    ['DoRA', [...ok, ['transformer.blocks.0.attn1.to_q.lora_magnitude_vector', rand([8])]], 'transformer.blocks.0.attn1.to_q.lora_magnitude_vector', /DoRA/],
    ['diff_b', [['diffusion_model.blocks.0.self_attn.q.diff_b', rand([8])], ...ok], 'diffusion_model.blocks.0.self_attn.q.diff_b', /full weight difference/],
    ['text encoder', [...ok, ['lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', rand([2, 8])]], 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', /text encoder/],
    ['same layer twice', [...ok, ['diffusion_model.blocks.0.self_attn.q.lora_down.weight', rand([2, 8])], ['diffusion_model.blocks.0.self_attn.q.lora_up.weight', rand([8, 2])]], 'diffusion_model.blocks.0.self_attn.q.lora_down.weight', /already changes/],
    ['mixed styles', [ok[0]!, ['transformer.blocks.0.attn1.to_q.lora_up.weight', rand([8, 2])]], 'transformer.blocks.0.attn1.to_q.lora_up.weight', /mixes/],
  ];
  for (const [what, entries, key, msg] of cases) throwsKey(tt, () => resolveLora(stateDict(entries), WAN), key, msg, what);
  throwsKey(tt, () => resolveLora(stateDict([]), WAN), null, /holds no tensors/, 'empty file');
});
