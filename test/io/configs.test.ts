// Diffusers layout and component configs: every golden and real config parses with its class
// schema (defaults filled, unknown fields kept); bad configs and folders fail naming file and field.
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import {
  COMPONENT_CLASSES,
  type ComponentClass,
  ConfigError,
  isComponentClass,
  parseComponentConfig,
} from '../../lib/io/configs.js';
import {
  checkModelFolder,
  componentPathFlag,
  expectConfig,
  extractComponentPathArgs,
  ModelFolderError,
  readComponentConfig,
  readModelIndex,
  resolveComponentDirs,
} from '../../lib/io/diffusers.js';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const GOLDEN = join(FIXTURES, 'golden');
const REAL = join(FIXTURES, 'real-configs');
const CASES = ['wan21-t2v', 'zimage-turbo', 'flux2-klein'];

const tmp = mkdtempSync(join(tmpdir(), 'nd-configs-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

async function rejects(tt: Tap, p: Promise<unknown>, type: new (...a: never[]) => Error, pattern: RegExp): Promise<Error> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  tt.ok(caught instanceof type, `a ${type.name}`);
  tt.match((caught as Error)?.message, pattern);
  return caught as Error;
}

function editJson(path: string, edit: (o: Record<string, unknown>) => void): void {
  const o = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  edit(o);
  writeFileSync(path, JSON.stringify(o));
}

/** Every config file under a folder tree (model configs and scheduler configs). */
function configFiles(root: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(root, { withFileTypes: true })) {
    const p = join(root, e.name);
    if (e.isDirectory()) out.push(...configFiles(p));
    else if (e.name === 'config.json' || e.name === 'scheduler_config.json') out.push(p);
  }
  return out;
}

t.test('model_index.json of the golden cases', async (tt) => {
  const wan = await readModelIndex(join(GOLDEN, 'wan21-t2v', 'model'));
  tt.equal(wan.className, 'WanPipeline');
  tt.equal(wan.diffusersVersion, '0.40.0.dev0');
  tt.same(wan.components, {
    scheduler: { library: 'diffusers', className: 'UniPCMultistepScheduler' },
    text_encoder: { library: 'transformers', className: 'UMT5EncoderModel' },
    tokenizer: { library: 'transformers', className: 'T5Tokenizer' },
    transformer: { library: 'diffusers', className: 'WanTransformer3DModel' },
    transformer_2: null,
    vae: { library: 'diffusers', className: 'AutoencoderKLWan' },
  });
  tt.same(wan.pipelineConfig, { boundary_ratio: null, expand_timesteps: false });
  tt.equal(wan.raw._class_name, 'WanPipeline');
  const klein = await readModelIndex(join(GOLDEN, 'flux2-klein', 'model'));
  tt.same(klein.pipelineConfig, { is_distilled: false });
  tt.equal(klein.components.text_encoder?.className, 'Qwen3ForCausalLM');
  const z = await readModelIndex(join(REAL, 'Z-Image-Turbo'));
  tt.equal(z.className, 'ZImagePipeline');
  tt.equal(z.diffusersVersion, '0.36.0.dev0');
});

t.test('every golden component config parses with its class schema', async (tt) => {
  let parsed = 0;
  for (const c of CASES) {
    const modelDir = join(GOLDEN, c, 'model');
    const index = await readModelIndex(modelDir);
    for (const [component, spec] of Object.entries(index.components)) {
      if (!spec || component === 'tokenizer') continue;
      const cc = await readComponentConfig(modelDir, component);
      tt.equal(cc.className, spec.className, `${c}/${component}`);
      tt.equal(cc.dir, join(modelDir, component));
      tt.equal(cc.file, join(modelDir, component, COMPONENT_CLASSES[cc.className].file));
      ++parsed;
    }
  }
  tt.equal(parsed, configFiles(GOLDEN).length, 'no config file left out');

  const wan = expectConfig(await readComponentConfig(join(GOLDEN, 'wan21-t2v', 'model'), 'transformer'), 'WanTransformer3DModel');
  tt.same([wan.num_layers, wan.num_attention_heads, wan.attention_head_dim, wan.text_dim, wan.ffn_dim], [2, 2, 12, 32, 48]);
  tt.same(wan.patch_size, [1, 2, 2]);
  const te = expectConfig(await readComponentConfig(join(GOLDEN, 'wan21-t2v', 'model'), 'text_encoder'), 'UMT5EncoderModel');
  tt.same([te.d_model, te.d_kv, te.num_heads, te.is_gated_act, te.dense_act_fn], [32, 8, 4, true, 'gelu_new']);
  const qwen = expectConfig(await readComponentConfig(join(GOLDEN, 'zimage-turbo', 'model'), 'text_encoder'), 'Qwen3Model', 'Qwen3ForCausalLM');
  tt.equal(qwen.rope_theta, 1e6, 'rope_theta from rope_parameters');
  tt.equal(qwen.layer_types.length, 3);
  tt.equal(qwen.dtype, 'bfloat16', 'unknown fields are kept');
  const sched = expectConfig(await readComponentConfig(join(GOLDEN, 'flux2-klein', 'model'), 'scheduler'), 'FlowMatchEulerDiscreteScheduler');
  tt.equal(sched.use_dynamic_shifting, true);
  tt.throws(
    () => expectConfig({ component: 'x', className: 'AutoencoderKL', dir: '', file: 'f', config: {} } as never, 'AutoencoderKLWan'),
    /is a AutoencoderKL; expected AutoencoderKLWan/,
  );
});

t.test('every real config parses, with constructor defaults for parameters added later', async (tt) => {
  let parsed = 0;
  for (const model of readdirSync(REAL, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name)) {
    const dir = join(REAL, model);
    if (existsSync(join(dir, 'model_index.json'))) {
      const index = await readModelIndex(dir);
      for (const [component, spec] of Object.entries(index.components)) {
        // the fixture holds only the components whose configs were found (Wan 14B: the transformer)
        if (!spec || component === 'tokenizer' || !existsSync(join(dir, component))) continue;
        const cc = await readComponentConfig(dir, component);
        tt.equal(cc.className, spec.className, `${model}/${component}`);
        ++parsed;
      }
    } else {
      // transformer-only folders (Wan 14B, klein 9B): the class comes from the file itself
      for (const file of configFiles(dir)) {
        const raw = JSON.parse(readFileSync(file, 'utf8')) as { _class_name: string };
        tt.ok(isComponentClass(raw._class_name), `${file}: known class ${raw._class_name}`);
        parseComponentConfig(raw._class_name as ComponentClass, raw, file);
        ++parsed;
      }
    }
  }
  tt.equal(parsed, configFiles(REAL).length, 'no config file left out');

  const wanDir = join(REAL, 'Wan2.1-T2V-1.3B-Diffusers');
  const vae = expectConfig(await readComponentConfig(wanDir, 'vae'), 'AutoencoderKLWan');
  tt.same(
    [vae.decoder_base_dim, vae.is_residual, vae.in_channels, vae.out_channels, vae.patch_size, vae.scale_factor_temporal, vae.scale_factor_spatial],
    [null, false, 3, 3, null, 4, 8],
  );
  tt.equal(vae.base_dim, 96);
  tt.equal(expectConfig(await readComponentConfig(wanDir, 'transformer'), 'WanTransformer3DModel').pos_embed_seq_len, null);
  const unipc = expectConfig(await readComponentConfig(wanDir, 'scheduler'), 'UniPCMultistepScheduler');
  tt.same(
    [unipc.use_dynamic_shifting, unipc.time_shift_type, unipc.sigma_min, unipc.sigma_max, unipc.shift_terminal, unipc.flow_shift, unipc.prediction_type],
    [false, 'exponential', null, null, null, 3, 'flow_prediction'],
  );
  const umt5 = expectConfig(await readComponentConfig(wanDir, 'text_encoder'), 'UMT5EncoderModel');
  tt.same([umt5.num_decoder_layers, umt5.pad_token_id, umt5.eos_token_id, umt5.dropout_rate, umt5.tie_word_embeddings], [24, 0, 1, 0.1, true]);

  const zDir = join(REAL, 'Z-Image-Turbo');
  tt.equal(expectConfig(await readComponentConfig(zDir, 'transformer'), 'ZImageTransformer2DModel').siglip_feat_dim, null);
  tt.same(expectConfig(await readComponentConfig(zDir, 'transformer'), 'ZImageTransformer2DModel').axes_lens, [1536, 512, 512]);
  const zs = expectConfig(await readComponentConfig(zDir, 'scheduler'), 'FlowMatchEulerDiscreteScheduler');
  tt.same([zs.shift, zs.use_dynamic_shifting, zs.base_shift, zs.max_shift, zs.base_image_seq_len, zs.time_shift_type], [3, false, 0.5, 1.15, 256, 'exponential']);
  const zq = expectConfig(await readComponentConfig(zDir, 'text_encoder'), 'Qwen3Model');
  tt.same([zq.rope_theta, zq.rope_parameters.rope_theta, zq.rope_parameters.rope_type, zq.sliding_window], [1e6, 1e6, 'default', null]);
  tt.equal(zq.layer_types.length, 36);
  tt.equal(zq.torch_dtype, 'bfloat16');
  tt.equal(zq.architectures?.[0], 'Qwen3ForCausalLM', 'architectures kept (the loader class comes from model_index.json)');

  const kDir = join(REAL, 'FLUX.2-klein-4B');
  tt.equal(expectConfig(await readComponentConfig(kDir, 'vae'), 'AutoencoderKLFlux2').decoder_block_out_channels, null);
  tt.same(expectConfig(await readComponentConfig(kDir, 'vae'), 'AutoencoderKLFlux2').patch_size, [2, 2]);
  const kt = expectConfig(await readComponentConfig(kDir, 'transformer'), 'Flux2Transformer2DModel');
  tt.same([kt.num_layers, kt.num_single_layers, kt.guidance_embeds, kt.out_channels], [5, 20, false, null]);
  const k9 = parseComponentConfig('Flux2Transformer2DModel', JSON.parse(readFileSync(join(REAL, 'FLUX.2-klein-9B', 'transformer', 'config.json'), 'utf8')), 'k9');
  tt.equal(k9.out_channels, null, 'out_channels absent -> default null');
});

t.test('config errors name the file and the field', async (tt) => {
  const model = join(tmp, 'wan');
  cpSync(join(GOLDEN, 'wan21-t2v', 'model'), model, { recursive: true });
  const tf = join(model, 'transformer', 'config.json');
  const original = readFileSync(tf, 'utf8');
  const cases: Array<[string, (o: Record<string, unknown>) => void, RegExp, string]> = [
    ['missing', (o) => delete o.num_layers, /missing required field 'num_layers' \(WanTransformer3DModel\)/, 'num_layers'],
    ['wrong type', (o) => (o.num_layers = '2'), /field 'num_layers' of WanTransformer3DModel: .*expected number, received string \(got "2"\)/, 'num_layers'],
    ['negative', (o) => (o.ffn_dim = -4), /field 'ffn_dim' of WanTransformer3DModel: .*\(got -4\)/, 'ffn_dim'],
    ['tuple', (o) => (o.patch_size = [1, 2]), /field 'patch_size' of WanTransformer3DModel/, 'patch_size'],
    ['class', (o) => (o._class_name = 'FluxTransformer2DModel'), /is a FluxTransformer2DModel config, but model_index.json names WanTransformer3DModel/, '_class_name'],
  ];
  for (const [what, edit, pattern, field] of cases) {
    writeFileSync(tf, original);
    editJson(tf, edit);
    const err = await rejects(tt, readComponentConfig(model, 'transformer'), ConfigError, pattern);
    tt.ok(err.message.startsWith(`${tf}: `), `${what}: names the file`);
    tt.equal((err as ConfigError).field, field, `${what}: names the field`);
  }
  writeFileSync(tf, original);
  editJson(tf, (o) => (o.some_future_option = { a: 1 }));
  const kept = await readComponentConfig(model, 'transformer');
  tt.same((kept.config as Record<string, unknown>).some_future_option, { a: 1 }, 'unknown fields are kept');

  const sc = join(model, 'scheduler', 'scheduler_config.json');
  editJson(sc, (o) => (o.solver_type = 'bh3'));
  await rejects(tt, readComponentConfig(model, 'scheduler'), ConfigError, /field 'solver_type' of UniPCMultistepScheduler: .*"bh1"\|"bh2" \(got "bh3"\)/);
  const te = join(model, 'text_encoder', 'config.json');
  editJson(te, (o) => (o.model_type = 't5'));
  await rejects(tt, readComponentConfig(model, 'text_encoder'), ConfigError, /field 'model_type' of UMT5EncoderModel/);
  editJson(te, (o) => {
    o.model_type = 'umt5';
    o.feed_forward_proj = 'gated-gelu-x';
  });
  await rejects(tt, readComponentConfig(model, 'text_encoder'), ConfigError, /feed_forward_proj.*must be '<act>' or 'gated-<act>'/);
  writeFileSync(join(model, 'vae', 'config.json'), '{"_class_name": ');
  await rejects(tt, readComponentConfig(model, 'vae'), ConfigError, /vae\/config.json: not valid JSON/);
  writeFileSync(join(model, 'vae', 'config.json'), '[1]');
  await rejects(tt, readComponentConfig(model, 'vae'), ConfigError, /must hold a JSON object/);
  rmSync(join(model, 'vae', 'config.json'));
  await rejects(tt, readComponentConfig(model, 'vae'), ConfigError, /vae\/config.json: cannot read/);

  const qwen = JSON.parse(readFileSync(join(GOLDEN, 'flux2-klein', 'model', 'text_encoder', 'config.json'), 'utf8')) as Record<string, unknown>;
  tt.throws(() => parseComponentConfig('Qwen3ForCausalLM', { ...qwen, layer_types: ['full_attention'] }, 'q.json'), /layer_types must have one entry per hidden layer/);
  tt.throws(() => parseComponentConfig('Qwen3ForCausalLM', { ...qwen, head_dim: undefined }, 'q.json'), /q.json: missing required field 'head_dim'/);

  await rejects(tt, readComponentConfig(model, 'transformer_2'), ModelFolderError, /component 'transformer_2' is absent/);
  await rejects(tt, readComponentConfig(model, 'unet'), ModelFolderError, /has no component 'unet'/);
  await rejects(tt, readComponentConfig(model, 'tokenizer'), ModelFolderError, /class T5Tokenizer, which this project does not load/);
  editJson(join(model, 'model_index.json'), (o) => delete o._class_name);
  await rejects(tt, readModelIndex(model), ConfigError, /model_index.json: missing required field '_class_name'/);
  editJson(join(model, 'model_index.json'), (o) => {
    o._class_name = 'WanPipeline';
    o.vae = ['diffusers', null];
  });
  await rejects(tt, readModelIndex(model), ConfigError, /component 'vae' must be \[library, class\] or \[null, null\]/);
});

t.test('model folders: single files rejected, overrides resolved', async (tt) => {
  const single = join(tmp, 'flux-2-klein-4b.safetensors');
  writeFileSync(single, 'x');
  await rejects(tt, checkModelFolder(single), ModelFolderError, /single-file checkpoints are not supported yet; pass a diffusers folder with model_index.json/);
  await rejects(tt, readModelIndex(single), ModelFolderError, /single-file checkpoints are not supported yet/);
  await rejects(tt, checkModelFolder(join(tmp, 'missing')), ModelFolderError, /does not exist/);
  await rejects(tt, checkModelFolder(join(GOLDEN, 'wan21-t2v')), ModelFolderError, /has no model_index.json: not a diffusers pipeline folder/);

  const zModel = join(GOLDEN, 'zimage-turbo', 'model');
  const plain = await resolveComponentDirs(zModel);
  tt.same(plain, Object.fromEntries(['scheduler', 'text_encoder', 'tokenizer', 'transformer', 'vae'].map((c) => [c, join(zModel, c)])));

  const otherVae = join(tmp, 'other-vae');
  cpSync(join(zModel, 'vae'), otherVae, { recursive: true });
  editJson(join(otherVae, 'config.json'), (o) => (o.scaling_factor = 0.5));
  const dirs = await resolveComponentDirs(zModel, { vae: otherVae });
  tt.equal(dirs.vae, otherVae);
  tt.equal(dirs.transformer, join(zModel, 'transformer'));
  const vae = expectConfig(await readComponentConfig(zModel, 'vae', { vae: otherVae }), 'AutoencoderKL');
  tt.equal(vae.scaling_factor, 0.5, 'config read from the override folder');

  await rejects(tt, resolveComponentDirs(zModel, { unet: otherVae }), ModelFolderError, /--unet-path: ZImagePipeline at .* has no component 'unet' \(components: scheduler, text_encoder, tokenizer, transformer, vae\)/);
  await rejects(tt, resolveComponentDirs(join(GOLDEN, 'wan21-t2v', 'model'), { transformer_2: otherVae }), ModelFolderError, /--transformer-2-path: .* has no component 'transformer_2'/);
  await rejects(tt, resolveComponentDirs(zModel, { vae: join(tmp, 'nope') }), ModelFolderError, /--vae-path: .*nope does not exist/);
  await rejects(tt, resolveComponentDirs(zModel, { vae: single }), ModelFolderError, /--vae-path: .* is not a folder \(single-file checkpoints are not supported yet/);
});

t.test('--<component>-path flags', (tt) => {
  tt.equal(componentPathFlag('text_encoder'), '--text-encoder-path');
  const { overrides, rest } = extractComponentPathArgs([
    '--model-path', 'm', '--vae-path', '/v', '--text-encoder-path=/t', '--prompt', 'a cat', '--output-path', 'o', '--lora-path=l',
  ]);
  tt.same(overrides, { vae: '/v', text_encoder: '/t' });
  tt.same(rest, ['--model-path', 'm', '--prompt', 'a cat', '--output-path', 'o', '--lora-path=l']);
  tt.throws(() => extractComponentPathArgs(['--vae-path']), /--vae-path needs a folder/);
  tt.throws(() => extractComponentPathArgs(['--vae-path', '--seed']), /--vae-path needs a folder/);
  tt.throws(() => extractComponentPathArgs(['--vae-path=']), /--vae-path needs a folder/);
  tt.end();
});
