// node-diffusion generate: one generation from the command line, a thin layer over loadPipeline()
// and Pipeline.generate(): writes an MP4 (or a PNG/JPEG/WebP for single-frame outputs), shows a progress bar
// over the denoising steps and prints the stage timings and peak memory.
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { resolveQuality } from '../encode/image.js';
import { decodeImage, encodeImage, type ImageFormat } from '../encode/image.js';
import { encodeMp4 } from '../encode/video.js';
import type { StartupLora } from '../lora/controls.js';
import { LoraManager, pipelineLoraTargets } from '../lora/manager.js';
import { LoraError } from '../lora/request.js';
import { loadPipeline } from '../pipelines/load.js';
import { type GenerateRequest, type GenerateResult, RequestError, type RgbImage } from '../pipelines/types.js';
import { ParallelConfigError, type ParallelConfig, resolveParallelConfig } from '../parallel/config.js';
import { type FlagTable, type FlagValue, formatHelp, parseFlags, readConfigFile, UsageError } from './flags.js';
import { loraFlags } from './lora-flags.js';
import type { Command } from './main.js';
import { createProgress, type Progress } from './progress.js';

export const GENERATE_FLAGS: FlagTable = {
  'model-path': { type: 'string', help: 'model: local diffusers folder, Hugging Face repo id, or demo:<family> (required)', placeholder: 'path|org/name|demo:<family>' },
  config: { type: 'string', help: 'JSON or YAML file of options (keys as flag names); flags on the command line win', placeholder: 'file' },
  prompt: { type: 'string', help: 'text prompt', placeholder: 'text' },
  'image-path': { type: 'paths', help: 'reference image (PNG/JPEG/WebP) for image editing; repeat for several', placeholder: 'file' },
  'negative-prompt': { type: 'string', help: "what to avoid (default: the model's negative prompt)", placeholder: 'text' },
  height: { type: 'int', help: 'output height in pixels (default: the model\'s)' },
  width: { type: 'int', help: 'output width in pixels (default: the model\'s)' },
  'num-frames': { type: 'int', help: 'video frames (Wan: 4k+1; 1 writes a PNG)' },
  fps: { type: 'int', help: 'frames per second of the video (default: the model\'s)' },
  'num-inference-steps': { type: 'int', help: 'denoising steps (default: the model\'s)' },
  'guidance-scale': { type: 'number', help: 'classifier-free guidance scale (default: the model\'s)' },
  'num-outputs-per-prompt': { type: 'int', help: 'outputs to generate', defaultText: '1' },
  seed: { type: 'int', help: 'random seed of the initial noise (output i uses seed + i)', defaultText: '42' },
  'output-path': { type: 'string', help: 'folder to write into', placeholder: 'dir', defaultText: './outputs' },
  'output-file-name': { type: 'string', help: 'file name (extension added); default from the prompt, time and parameters', placeholder: 'name' },
  'output-format': { type: 'string', help: 'file format of image outputs (videos are MP4)', choices: ['png', 'jpeg', 'webp'], defaultText: 'png' },
  'output-quality': { type: 'string', help: 'quality preset of JPEG, WebP and video outputs', choices: ['maximum', 'high', 'medium', 'low', 'default'], defaultText: 'default' },
  'output-compression': { type: 'int', help: 'quality 0..100, wins over --output-quality' },
  device: { type: 'string', help: 'where to compute', choices: ['cpu', 'cuda', 'auto'], defaultText: 'auto' },
  'text-encoder-cpu-offload': { type: 'boolean', help: 'release the text encoder after prompt encoding (always done on the CPU)' },
  'num-gpus': { type: 'int', help: 'ranks: one process per GPU (CUDA, NCCL), or CPU processes over shared memory with --device cpu', defaultText: '1' },
  'ulysses-degree': { type: 'int', help: 'Ulysses sequence-parallel degree (heads split over the ranks)', defaultText: 'num-gpus / cfg, unless --ring-degree is given' },
  'ring-degree': { type: 'int', help: 'ring-attention degree (key/value blocks passed around the ranks)', defaultText: '1' },
  'enable-cfg-parallel': { type: 'boolean', help: 'run the conditional and unconditional CFG branches on two sets of ranks' },
  'lora-path': { type: 'string', help: 'LoRA to merge before generating (.safetensors, folder or hub id)', placeholder: 'file|dir|org/name' },
  'lora-nickname': { type: 'string', help: 'name of that LoRA', defaultText: 'default' },
  'lora-scale': { type: 'number', help: 'strength of that LoRA', defaultText: '1.0' },
};

/** --<component>-path (e.g. --vae-path, --transformer-path) overrides a component folder. */
const COMPONENT_PATH = /^(?!model-|output-|lora-)([a-z0-9_-]+)-path$/;

export interface GenerateConfig {
  modelPath: string;
  device: 'cpu' | 'cuda' | 'auto';
  componentPaths: Record<string, string>;
  textEncoderCpuOffload: boolean;
  outputPath: string;
  outputFileName: string | null;
  outputFormat: ImageFormat;
  outputQuality: string | undefined;
  outputCompression: number | undefined;
  /** reference images, decoded before generating */
  imagePaths: string[];
  /** a LoRA merged into the denoiser before generating */
  lora: StartupLora | null;
  /** the ranks (--num-gpus and the sequence/CFG-parallel degrees) */
  parallel: ParallelConfig;
  request: Omit<GenerateRequest, 'onProgress' | 'signal' | 'images'>;
}

/** Flags (and the --config file under them) -> what to generate. Throws UsageError on anything wrong. */
export function generateConfig(argv: readonly string[]): GenerateConfig | 'help' {
  const cli = parseFlags(argv, GENERATE_FLAGS, { dynamic: COMPONENT_PATH });
  if (cli.help) return 'help';
  const file = typeof cli.values.config === 'string' ? readConfigFile(cli.values.config, GENERATE_FLAGS, { dynamic: COMPONENT_PATH }) : null;
  const v: Record<string, FlagValue> = { ...(file?.values ?? {}), ...cli.values };
  const componentPaths = { ...(file?.dynamic ?? {}), ...cli.dynamic };
  let parallel: ParallelConfig;
  try {
    const positive = (flag: string) => {
      const x = v[flag] as number | undefined;
      if (x !== undefined && x < 1) throw new UsageError(`--${flag}: must be greater than 0, got ${x}`);
      return x;
    };
    parallel = resolveParallelConfig({
      numGpus: positive('num-gpus'),
      ulyssesDegree: positive('ulysses-degree'),
      ringDegree: positive('ring-degree'),
      enableCfgParallel: v['enable-cfg-parallel'] as boolean | undefined,
    });
  } catch (err) {
    if (err instanceof ParallelConfigError) throw new UsageError(err.message);
    throw err;
  }
  const modelPath = v['model-path'];
  if (typeof modelPath !== 'string' || modelPath === '')
    throw new UsageError('--model-path is required (a diffusers folder, org/name, or demo:wan / demo:zimage / demo:flux2-klein)');
  const prompt = v.prompt;
  if (typeof prompt !== 'string') throw new UsageError('--prompt is required');
  const num = (flag: string) => v[flag] as number | undefined;
  const request: GenerateConfig['request'] = { prompt, seed: num('seed') ?? 42 };
  const fields: Array<[keyof GenerateRequest, string]> = [
    ['height', 'height'], ['width', 'width'], ['numFrames', 'num-frames'], ['fps', 'fps'],
    ['numInferenceSteps', 'num-inference-steps'], ['guidanceScale', 'guidance-scale'], ['numOutputs', 'num-outputs-per-prompt'],
  ];
  for (const [field, flag] of fields) if (v[flag] !== undefined) (request as Record<string, unknown>)[field] = v[flag];
  if (typeof v['negative-prompt'] === 'string') request.negativePrompt = v['negative-prompt'];
  const name = v['output-file-name'] as string | undefined;
  if (name !== undefined && (name === '' || /[/\\]/.test(name) || name === '.' || name === '..'))
    throw new UsageError(`--output-file-name: '${name}' must be a plain file name`);
  return {
    modelPath,
    device: (v.device as GenerateConfig['device'] | undefined) ?? 'auto',
    componentPaths: Object.fromEntries(Object.entries(componentPaths).map(([k, p]) => [k.replace(/-/g, '_'), p])),
    textEncoderCpuOffload: (v['text-encoder-cpu-offload'] as boolean | undefined) ?? false,
    outputPath: (v['output-path'] as string | undefined) ?? './outputs',
    outputFileName: name ?? null,
    outputFormat: (v['output-format'] as ImageFormat | undefined) ?? 'png',
    outputQuality: v['output-quality'] as string | undefined,
    outputCompression: num('output-compression'),
    imagePaths: (v['image-path'] as string[] | undefined) ?? [],
    lora: loraFlags(v),
    parallel,
    request,
  };
}

/**
 * The upstream default file name: {prompt[:100]}_{YYYYmmdd-HHMMSS}_{sha256(params)[:8]}, reduced to
 * [A-Za-z0-9._-].
 */
export function defaultFileName(req: GenerateRequest, when: Date): string {
  const prompt = (Array.isArray(req.prompt) ? req.prompt[0] ?? '' : req.prompt).slice(0, 100);
  const p2 = (n: number) => String(n).padStart(2, '0');
  const stamp = `${when.getFullYear()}${p2(when.getMonth() + 1)}${p2(when.getDate())}-${p2(when.getHours())}${p2(when.getMinutes())}${p2(when.getSeconds())}`;
  const params = JSON.stringify({
    prompt: req.prompt, negativePrompt: req.negativePrompt, width: req.width, height: req.height, numFrames: req.numFrames,
    steps: req.numInferenceSteps, guidance: req.guidanceScale, seed: req.seed,
  });
  const hash = createHash('sha256').update(params).digest('hex').slice(0, 8);
  return `${prompt}_${stamp}_${hash}`.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** File extension of each image format. */
const IMAGE_EXTENSIONS: Record<ImageFormat, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

/** Writes each output (MP4, or an image in the output format for one frame) and returns the paths. */
async function writeOutputs(result: GenerateResult, cfg: GenerateConfig, baseName: string): Promise<string[]> {
  await mkdir(cfg.outputPath, { recursive: true });
  const video = result.numFrames > 1;
  const quality = resolveQuality({ outputCompression: cfg.outputCompression ?? null, outputQuality: cfg.outputQuality ?? null }, video ? 'video' : 'image');
  const stem = baseName.replace(/\.(mp4|png|jpe?g|webp)$/i, '');
  const ext = video ? 'mp4' : IMAGE_EXTENSIONS[cfg.outputFormat];
  const paths: string[] = [];
  for (const [i, frames] of result.outputs.entries()) {
    const suffix = result.outputs.length > 1 ? `_${i}` : '';
    const path = resolve(join(cfg.outputPath, `${stem}${suffix}.${ext}`));
    if (video) await encodeMp4(frames, { fps: result.fps, quality }, path);
    else await writeFile(path, await encodeImage(frames[0]!, cfg.outputFormat, quality));
    paths.push(path);
  }
  return paths;
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

const USAGE =
  'Usage: node-diffusion generate --model-path <dir|org/name|demo:wan|demo:zimage|demo:flux2-klein> --prompt <text> [--image-path <file> ...] [options]';
const FOOTER = 'Component overrides: --<component>-path <dir> (e.g. --vae-path, --transformer-path, --text-encoder-path).';

export const command: Command = {
  summary: 'generate one video or image from a prompt and write it to a file',
  async run(argv) {
    let cfg: GenerateConfig | 'help';
    try {
      cfg = generateConfig(argv);
    } catch (err) {
      if (err instanceof UsageError) {
        console.error(`node-diffusion generate: ${err.message}`);
        return 2;
      }
      throw err;
    }
    if (cfg === 'help') {
      console.log(formatHelp(USAGE, GENERATE_FLAGS, FOOTER));
      return 0;
    }
    if (cfg.parallel.worldSize > 1) return (await import('./generate-ranks.js')).generateOnRanks(cfg, cfg.parallel);
    const t0 = performance.now();
    let pipeline: Awaited<ReturnType<typeof loadPipeline>>;
    try {
      pipeline = await loadPipeline(cfg.modelPath, {
        device: cfg.device,
        componentPaths: cfg.componentPaths,
        textEncoderCpuOffload: cfg.textEncoderCpuOffload,
      });
    } catch (err) {
      console.error(`node-diffusion generate: cannot load ${cfg.modelPath}: ${err instanceof Error ? err.message : String(err)}`);
      return 1;
    }
    const loadMs = performance.now() - t0;
    let lora: LoraManager | null = null;
    try {
      if (cfg.lora) {
        lora = new LoraManager(pipelineLoraTargets(pipeline));
        try {
          await lora.setLora({ lora_nickname: cfg.lora.nickname, lora_path: cfg.lora.path, strength: cfg.lora.strength });
        } catch (err) {
          console.error(`node-diffusion generate: --lora-path ${cfg.lora.path}: ${err instanceof Error ? err.message : String(err)}`);
          return err instanceof LoraError ? 2 : 1;
        }
      }
      let request: GenerateRequest;
      try {
        const images: RgbImage[] = [];
        for (const path of cfg.imagePaths) {
          let bytes: Buffer;
          try {
            bytes = await readFile(path);
          } catch (err) {
            throw new RequestError(`--image-path ${path}: cannot read (${(err as Error).message})`, 'image');
          }
          images.push(await decodeImage(bytes, { param: `--image-path ${path}` }));
        }
        request = pipeline.validate({ ...cfg.request, ...(images.length > 0 ? { images } : {}) });
        resolveQuality({ outputCompression: cfg.outputCompression ?? null, outputQuality: cfg.outputQuality ?? null }, 'video');
      } catch (err) {
        if (err instanceof RequestError) {
          console.error(`node-diffusion generate: ${err.message}`);
          return 2;
        }
        throw err;
      }
      const stepTimes: number[] = [];
      let bar: Progress | null = null;
      const controller = new AbortController();
      const onSigint = () => controller.abort();
      process.once('SIGINT', onSigint);
      let result: GenerateResult;
      try {
        result = await pipeline.generate({
          ...request,
          signal: controller.signal,
          onProgress: (p) => {
            if (p.stage !== 'denoise') return;
            bar ??= createProgress({ total: p.totalSteps, label: 'denoising', unit: 'steps' });
            stepTimes.push(p.stepMs);
            bar.update(p.step);
            if (p.step === p.totalSteps) bar.done();
          },
        });
      } finally {
        process.off('SIGINT', onSigint);
      }
      const t1 = performance.now();
      const paths = await writeOutputs(result, cfg, cfg.outputFileName ?? defaultFileName(request, new Date()));
      const encodeMs = performance.now() - t1;

      for (const p of paths) console.log(`wrote ${p}`);
      const mean = stepTimes.reduce((a, b) => a + b, 0) / Math.max(1, stepTimes.length);
      console.log(`${result.width}x${result.height}, ${result.numFrames} frame(s), seed ${result.seed}`);
      const stages: Array<[string, number]> = [['load', loadMs], ...Object.entries(result.timings), ['encode_output', encodeMs]];
      console.log(`timings: ${stages.map(([k, ms]) => `${k} ${formatMs(ms)}`).join(', ')}`);
      if (stepTimes.length) console.log(`denoising: ${stepTimes.length} steps, ${formatMs(mean)}/step (fastest ${formatMs(Math.min(...stepTimes))}, slowest ${formatMs(Math.max(...stepTimes))})`);
      const peakRssMb = process.resourceUsage().maxRSS / 1024;
      console.log(`peak memory: ${result.peakMemoryMb.toFixed(0)} MB of tensors, ${peakRssMb.toFixed(0)} MB process RSS`);
      return 0;
    } finally {
      lora?.dispose();
      pipeline.dispose();
    }
  },
};
