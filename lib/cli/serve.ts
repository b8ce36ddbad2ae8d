// node-diffusion serve: the OpenAI-compatible HTTP server (SPEC section 4 flags).
import { ParallelConfigError, resolveParallelConfig } from '../parallel/config.js';
import { createServer } from '../server/app.js';
import type { ServerOptions } from '../server/options.js';
import { type FlagTable, type FlagValue, formatHelp, parseFlags, readConfigFile, UsageError } from './flags.js';
import { loraFlags } from './lora-flags.js';
import type { Command } from './main.js';

export const SERVE_FLAGS: FlagTable = {
  'model-path': { type: 'string', help: 'model: local diffusers folder, Hugging Face repo id, or demo:<family> (required)', placeholder: 'path|org/name|demo:wan' },
  config: { type: 'string', help: 'JSON or YAML file of options (keys as flag names); flags on the command line win', placeholder: 'file' },
  host: { type: 'string', help: 'address to listen on', defaultText: '127.0.0.1' },
  port: { type: 'int', help: 'port to listen on', defaultText: '30000' },
  'output-path': { type: 'string', help: 'folder of the job database, images and videos', placeholder: 'dir', defaultText: './outputs' },
  device: { type: 'string', help: 'where to compute', choices: ['cpu', 'cuda', 'auto'], defaultText: 'auto' },
  'num-gpus': { type: 'int', help: 'worker ranks: one process per GPU (CUDA, NCCL), or CPU processes over shared memory with --device cpu', defaultText: '1' },
  'ulysses-degree': { type: 'int', help: 'Ulysses sequence-parallel degree (heads split over the ranks)', defaultText: 'num-gpus / cfg, unless --ring-degree is given' },
  'ring-degree': { type: 'int', help: 'ring-attention degree (key/value blocks passed around the ranks)', defaultText: '1' },
  'enable-cfg-parallel': { type: 'boolean', help: 'run the conditional and unconditional CFG branches on two sets of ranks' },
  'text-encoder-cpu-offload': { type: 'boolean', help: 'release the text encoder after each prompt encoding (always done on the CPU)' },
  'dit-cpu-offload': { type: 'boolean', help: 'keep the DiT weights in host memory between uses (GPU)' },
  'vae-cpu-offload': { type: 'boolean', help: 'keep the VAE weights in host memory between uses (GPU)' },
  'pin-cpu-memory': { type: 'boolean', help: 'pin host copies of offloaded weights (GPU)' },
  'dit-precision': { type: 'string', help: 'DiT compute precision', choices: ['fp32', 'fp16', 'bf16'] },
  'vae-precision': { type: 'string', help: 'VAE compute precision', choices: ['fp32', 'fp16', 'bf16'] },
  'attention-backend': { type: 'string', help: 'attention implementation', placeholder: 'name' },
  'lora-path': { type: 'string', help: 'LoRA to load and merge at startup (.safetensors, folder or hub id)', placeholder: 'file|dir|org/name' },
  'lora-nickname': { type: 'string', help: 'nickname of the startup LoRA', defaultText: 'default' },
  'lora-scale': { type: 'number', help: 'strength of the startup LoRA', defaultText: '1.0' },
  'max-loras': { type: 'int', help: 'LoRA adapters kept in memory (least recently used evicted first)', defaultText: '8' },
  warmup: { type: 'boolean', help: 'run a 1-step generation after loading, before serving' },
  'api-key': { type: 'string', help: 'require "Authorization: Bearer KEY" on every route but /health', placeholder: 'key', defaultText: '$NODE_DIFFUSION_API_KEY' },
  'max-queue': { type: 'int', help: 'jobs waiting before requests get 429', defaultText: '256' },
  'max-batch-size': { type: 'int', help: 'output items (requests x n) compatible queued requests may fill together as one pipeline batch (1: no batching)', defaultText: '4 on CUDA, 1 on the CPU' },
  'log-level': { type: 'string', help: 'log level', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], defaultText: 'info' },
  cors: { type: 'boolean', help: 'allow cross-origin requests from any origin' },
  'cors-origins': { type: 'list', help: 'allow cross-origin requests from these origins only', placeholder: 'origin,origin' },
  'allow-url-fetch': { type: 'boolean', help: 'let requests reference input images by http(s) URL (data: URLs always work)' },
  'output-retention': { type: 'duration', help: 'delete output files this long after completion (e.g. 3600, 24h, 7d)', placeholder: 'duration', defaultText: 'keep' },
  'requeue-on-restart': { type: 'boolean', help: 'requeue video jobs interrupted by a shutdown or crash instead of failing them' },
  'shutdown-timeout': { type: 'duration', help: 'how long SIGTERM/SIGINT waits for the running job before cancelling it', placeholder: 'duration', defaultText: '30s' },
  'max-upload-mb': { type: 'number', help: 'largest accepted upload or fetched image, MiB', defaultText: '20' },
};

/** --<component>-path (e.g. --vae-path, --transformer-path) overrides a component folder. */
const COMPONENT_PATH = /^(?!model-|output-|lora-)([a-z0-9_-]+)-path$/;

/** Flags of other subsystems that this build accepts only at their neutral value. */
const NOT_YET: Record<string, { neutral: FlagValue; why: string }> = {
  'dit-cpu-offload': { neutral: false, why: 'weight offloading applies to GPU memory, which this build does not manage yet' },
  'vae-cpu-offload': { neutral: false, why: 'weight offloading applies to GPU memory, which this build does not manage yet' },
  'pin-cpu-memory': { neutral: false, why: 'pinned host memory applies to GPU offloading, which this build does not manage yet' },
  'dit-precision': { neutral: '', why: 'precision is chosen by the pipeline from the weights in this build' },
  'vae-precision': { neutral: '', why: 'precision is chosen by the pipeline from the weights in this build' },
  'attention-backend': { neutral: '', why: 'the attention implementation is chosen by the engine in this build' },
};

export interface ServeConfig {
  server: ServerOptions;
  host: string;
  port: number;
}

/** Flags (and the --config file under them) -> server options. Throws UsageError on anything wrong. */
export function serveConfig(argv: readonly string[]): ServeConfig | 'help' {
  const cli = parseFlags(argv, SERVE_FLAGS, { dynamic: COMPONENT_PATH });
  if (cli.help) return 'help';
  const file = typeof cli.values.config === 'string' ? readConfigFile(cli.values.config, SERVE_FLAGS, { dynamic: COMPONENT_PATH }) : null;
  const v: Record<string, FlagValue> = { ...(file?.values ?? {}), ...cli.values };
  const componentPaths = { ...(file?.dynamic ?? {}), ...cli.dynamic };
  for (const [flag, { neutral, why }] of Object.entries(NOT_YET)) {
    if (v[flag] !== undefined && v[flag] !== neutral) throw new UsageError(`--${flag}: ${why}`);
  }
  const modelPath = v['model-path'];
  if (typeof modelPath !== 'string' || modelPath === '') throw new UsageError('--model-path is required (a diffusers folder, org/name, or demo:wan)');
  const port = (v.port as number | undefined) ?? 30000;
  if (port < 0 || port > 65535) throw new UsageError(`--port: ${port} is not a port number`);
  const positive = (flag: string) => {
    const x = v[flag];
    if (x !== undefined && !((x as number) > 0)) throw new UsageError(`--${flag}: must be greater than 0, got ${String(x)}`);
    return x as number | undefined;
  };
  const maxQueue = positive('max-queue');
  const maxBatchSize = positive('max-batch-size');
  const layout = {
    numGpus: positive('num-gpus') ?? 1,
    ulyssesDegree: positive('ulysses-degree'),
    ringDegree: positive('ring-degree'),
    enableCfgParallel: v['enable-cfg-parallel'] as boolean | undefined,
  };
  try {
    resolveParallelConfig(layout);
  } catch (err) {
    if (err instanceof ParallelConfigError) throw new UsageError(err.message);
    throw err;
  }
  const retention = positive('output-retention');
  const uploadMb = positive('max-upload-mb');
  const maxLoras = positive('max-loras');
  const lora = loraFlags(v);
  const shutdown = v['shutdown-timeout'] as number | undefined;
  const origins = v['cors-origins'] as string[] | undefined;
  const server: ServerOptions = {
    modelPath,
    outputPath: (v['output-path'] as string | undefined) ?? './outputs',
    device: (v.device as ServerOptions['device']) ?? 'auto',
    componentPaths: Object.fromEntries(Object.entries(componentPaths).map(([k, p]) => [k.replace(/-/g, '_'), p])),
    textEncoderCpuOffload: (v['text-encoder-cpu-offload'] as boolean | undefined) ?? false,
    ...layout,
    apiKey: (v['api-key'] as string | undefined) ?? process.env.NODE_DIFFUSION_API_KEY ?? null,
    cors: origins && origins.length > 0 ? origins : ((v.cors as boolean | undefined) ?? false),
    maxQueue: maxQueue ?? 256,
    ...(maxBatchSize !== undefined ? { maxBatchSize } : {}),
    requeueOnRestart: (v['requeue-on-restart'] as boolean | undefined) ?? false,
    outputRetentionSeconds: retention ?? null,
    shutdownTimeoutMs: shutdown === undefined ? 30_000 : shutdown * 1000,
    allowUrlFetch: (v['allow-url-fetch'] as boolean | undefined) ?? false,
    maxUploadBytes: uploadMb === undefined ? undefined : Math.round(uploadMb * 1024 * 1024),
    warmup: (v.warmup as boolean | undefined) ?? false,
    ...(lora ? { loraPath: lora.path, loraNickname: lora.nickname, loraScale: lora.strength } : {}),
    ...(maxLoras !== undefined ? { maxLoras } : {}),
    logLevel: (v['log-level'] as string | undefined) ?? 'info',
  };
  return { server, host: (v.host as string | undefined) ?? '127.0.0.1', port };
}

const USAGE = 'Usage: node-diffusion serve --model-path <dir|org/name|demo:wan> [options]';
const FOOTER = [
  'Component overrides: --<component>-path <dir> (e.g. --vae-path, --transformer-path, --text-encoder-path).',
  'Stop with SIGTERM or Ctrl-C: new requests get 503, the running job may finish within --shutdown-timeout.',
].join('\n');

export const command: Command = {
  summary: 'serve a model over the OpenAI-compatible HTTP API',
  async run(argv) {
    let cfg: ServeConfig | 'help';
    try {
      cfg = serveConfig(argv);
    } catch (err) {
      if (err instanceof UsageError) {
        console.error(`node-diffusion serve: ${err.message}`);
        return 2;
      }
      throw err;
    }
    if (cfg === 'help') {
      console.log(formatHelp(USAGE, SERVE_FLAGS, FOOTER));
      return 0;
    }
    const app = await createServer(cfg.server);
    let stopping: Promise<void> | null = null;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        app.log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      app.log.info({ signal }, 'shutting down');
      stopping = app.close();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    try {
      const address = await app.listen({ host: cfg.host, port: cfg.port });
      app.log.info({ address, model: cfg.server.modelPath }, `node-diffusion serving ${cfg.server.modelPath} at ${address}`);
    } catch (err) {
      await app.close();
      throw err;
    }
    await new Promise<void>((resolve) => app.server.once('close', () => resolve()));
    await stopping;
    return 0;
  },
};
