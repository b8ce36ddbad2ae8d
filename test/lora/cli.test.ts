// `node-diffusion generate --lora-path` on demo:zimage: the image equals the same LoRA merged into an
// in-process pipeline (and differs from the base one); a LoRA that does not fit is a usage error.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { decodeImage } from '../../lib/encode/image.js';
import * as E from '../../lib/engine/index.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { LoraManager, pipelineLoraTargets } from '../../lib/lora/manager.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import { runCli } from '../helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-lora-cli-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('generate --lora-path merges the LoRA before generating', async (tt) => {
  const pipeline = await loadPipeline('demo:zimage', { device: 'cpu' });
  const lora = new LoraManager(pipelineLoraTargets(pipeline));
  tt.teardown(() => {
    lora.dispose();
    pipeline.dispose();
  });
  const dit = pipelineLoraTargets(pipeline).transformer!;
  const tensors: Record<string, E.Tensor> = {};
  for (const [i, m] of ['layers.0.attention.to_v', 'layers.1.feed_forward.w3'].entries()) {
    const [out, inp] = dit.parameter(`${m}.weight`).shape as [number, number];
    tensors[`diffusion_model.${m}.lora_A.weight`] = E.mul(E.randn([4, inp], { seed: 50 + i }), 0.5);
    tensors[`diffusion_model.${m}.lora_B.weight`] = E.mul(E.randn([out, 4], { seed: 60 + i }), 0.5);
  }
  const file = join(tmp, 'style.safetensors');
  writeSafetensors(file, tensors);
  E.disposeAll(tensors);

  const args = ['generate', '--model-path', 'demo:zimage', '--prompt', 'a fox in the snow', '--device', 'cpu', '--num-inference-steps', '2', '--width', '64', '--height', '64', '--seed', '3', '--output-path', tmp];
  let r = await runCli([...args, '--output-file-name', 'base']);
  tt.equal(r.code, 0, r.err);
  r = await runCli([...args, '--output-file-name', 'styled', '--lora-path', file, '--lora-scale', '0.9']);
  tt.equal(r.code, 0, r.err);
  const base = (await decodeImage(readFileSync(join(tmp, 'base.png')))).data;
  const styled = (await decodeImage(readFileSync(join(tmp, 'styled.png')))).data;
  tt.notSame(Buffer.from(styled), Buffer.from(base), 'the LoRA changes the image');
  await lora.setLora({ lora_nickname: 'style', lora_path: file, strength: 0.9 });
  const expected = await pipeline.generate(pipeline.validate({ prompt: 'a fox in the snow', numInferenceSteps: 2, width: 64, height: 64, seed: 3 }));
  tt.same(Buffer.from(styled), Buffer.from(expected.outputs[0]![0]!.data), 'equal to the LoRA merged in-process');

  r = await runCli([...args, '--lora-path', join(import.meta.dirname, '..', 'fixtures', 'golden', 'wan21-t2v', 'lora_kohya.safetensors')]);
  tt.equal(r.code, 2, 'a LoRA for another model: usage error');
  tt.match(r.err, /--lora-path .*lora_kohya\.safetensors: LoRA 'default' .* key 'diffusion_model\.blocks\.0\.cross_attn\.k\.alpha' names the layer 'blocks\.0\.cross_attn\.k', which ZImageTransformer2DModel does not have/);
  r = await runCli([...args, '--lora-scale', '0.5']);
  tt.equal(r.code, 2);
  tt.match(r.err, /--lora-scale needs --lora-path/);
});
