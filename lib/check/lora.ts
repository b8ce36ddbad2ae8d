// `lora` checks of WanPipeline and ZImagePipeline: the case's LoRA files set on the transformer through
// the LoraManager (the same path as the set_lora API), then the fused weights of the named layers and
// one transformer forward on the inputs of the `transformer` check. The transformer is loaded in
// float32 because the reference fused in float32 (bf16 checkpoints are widened exactly).
// Before comparing, the key -> module mapping, rank and alpha this project reads from each file are
// checked against what case.json records for it.
import { basename, extname, join } from 'node:path';

import { scope, type Tensor } from '../engine/tensor.js';
import { readComponentConfig } from '../io/diffusers.js';
import { resolveLora, targetLayout } from '../lora/formats.js';
import { LoraManager, type LoraTargetModel } from '../lora/manager.js';
import { disposeStateDict, readLoraFile } from '../lora/source.js';
import { WanTransformer3DModel } from '../models/wan/transformer.js';
import { ZImageTransformer2DModel } from '../models/zimage/transformer.js';
import { type CheckContext, registerCheck } from './registry.js';

interface LoraEntry {
  file: string;
  strength: number;
}

/** What case.json records about one LoRA file. */
interface FileFacts {
  rank?: number;
  alpha?: number;
  scale?: number;
  /** kohya files: key prefix -> module */
  key_to_module?: Record<string, string>;
  /** PEFT files: the modules it changes */
  targets?: string[];
}

function loraEntries(ctx: CheckContext): LoraEntry[] {
  const loras = ctx.check.params.loras;
  const ok =
    Array.isArray(loras) &&
    loras.length > 0 &&
    loras.every((l) => l && typeof (l as LoraEntry).file === 'string' && typeof (l as LoraEntry).strength === 'number');
  if (!ok) throw new Error(`check '${ctx.check.name}': params.loras must be a non-empty list of {file, strength}`);
  return loras as LoraEntry[];
}

/** Throws when this project reads a LoRA file differently from what case.json says about it. */
function checkFileFacts(ctx: CheckContext, file: string, model: LoraTargetModel & object): void {
  const facts = ctx.check.params[file] as FileFacts | undefined;
  if (!facts) return;
  const sd = readLoraFile(join(ctx.caseDir, file));
  try {
    const resolved = resolveLora(sd, targetLayout(model.constructor.name, model));
    try {
      const fail = (what: string) => {
        throw new Error(`check '${ctx.check.name}': ${file}: ${what}`);
      };
      for (const l of resolved.layers) {
        if (facts.rank !== undefined && l.rank !== facts.rank) fail(`${l.key} has rank ${l.rank}, case.json says ${facts.rank}`);
        if (facts.alpha !== undefined && l.alpha !== facts.alpha) fail(`${l.key} has alpha ${l.alpha}, case.json says ${facts.alpha}`);
        if (facts.scale !== undefined && Math.abs(l.scale - facts.scale) > 1e-12) fail(`${l.key} has scale ${l.scale}, case.json says ${facts.scale}`);
      }
      const modules = resolved.layers.map((l) => l.module).sort();
      if (facts.targets && JSON.stringify(modules) !== JSON.stringify([...facts.targets].sort()))
        fail(`changes ${modules.join(', ')}; case.json says ${facts.targets.join(', ')}`);
      if (facts.key_to_module) {
        const expected = Object.entries(facts.key_to_module);
        if (expected.length !== resolved.layers.length) fail(`changes ${resolved.layers.length} layers, case.json maps ${expected.length} keys`);
        for (const [prefix, module] of expected) {
          const layer = resolved.layers.find((l) => l.key.startsWith(`${prefix}.`));
          if (!layer) fail(`no layer read from the key prefix ${prefix}`);
          else if (layer.module !== module) fail(`${prefix} was mapped to ${layer.module}, case.json says ${module}`);
        }
      }
    } finally {
      resolved.dispose();
    }
  } finally {
    disposeStateDict(sd);
  }
}

interface LoraModel extends LoraTargetModel {
  dispose(): void;
}

function registerLoraCheck(pipelineClass: string, load: (dir: string, ctx: CheckContext) => Promise<LoraModel>, forward: (model: LoraModel, ctx: CheckContext) => Tensor | Tensor[]) {
  registerCheck(pipelineClass, 'lora', async (ctx) => {
    const entries = loraEntries(ctx);
    const cc = await readComponentConfig(ctx.modelDir, 'transformer');
    const model = await load(cc.dir, ctx);
    const manager = new LoraManager({ transformer: model });
    try {
      for (const e of entries) checkFileFacts(ctx, e.file, model);
      await manager.setLora({
        lora_nickname: entries.map((e) => basename(e.file, extname(e.file))),
        lora_path: entries.map((e) => join(ctx.caseDir, e.file)),
        strength: entries.map((e) => e.strength),
      });
      const result: Record<string, Tensor | Tensor[]> = {};
      for (const output of Object.keys(ctx.check.outputs)) {
        if (output.startsWith('merged_weight:')) result[output] = model.parameter(output.slice('merged_weight:'.length)).clone();
      }
      result.transformer_output = forward(model, ctx);
      return result;
    } finally {
      manager.dispose();
      model.dispose();
    }
  });
}

registerLoraCheck(
  'WanPipeline',
  (dir, ctx) => WanTransformer3DModel.load(dir, { device: ctx.device, dtype: 'float32' }),
  (model, ctx) =>
    scope(() =>
      (model as WanTransformer3DModel).forward(
        ctx.inputTensor('hidden_states').toDevice(ctx.device),
        ctx.inputTensor('timestep').toDevice(ctx.device),
        ctx.inputTensor('encoder_hidden_states').toDevice(ctx.device),
      ),
    ),
);

registerLoraCheck(
  'ZImagePipeline',
  (dir, ctx) => ZImageTransformer2DModel.load(dir, { device: ctx.device, dtype: 'float32' }),
  (model, ctx) =>
    scope(() =>
      (model as ZImageTransformer2DModel).forward(
        ctx.inputList('x').map((x) => x.toDevice(ctx.device)),
        ctx.inputTensor('t').toDevice(ctx.device),
        ctx.inputList('cap_feats').map((c) => c.toDevice(ctx.device)),
      ),
    ),
);
