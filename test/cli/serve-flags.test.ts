// `serve` flag parsing: types, booleans in the upstream style, --config files (flags win), unknown flags.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import t from 'tap';

import { formatHelp, parseDuration, parseFlags, UsageError } from '../../lib/cli/flags.js';
import { SERVE_FLAGS, serveConfig } from '../../lib/cli/serve.js';

const dir = await mkdtemp(join(tmpdir(), 'nd-flags-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

t.test('defaults', async (t) => {
  const c = serveConfig(['--model-path', 'demo:wan']);
  if (c === 'help') throw new Error('unexpected help');
  t.equal(c.host, '127.0.0.1');
  t.equal(c.port, 30000);
  t.match(c.server, {
    modelPath: 'demo:wan',
    outputPath: './outputs',
    device: 'auto',
    numGpus: 1,
    cors: false,
    maxQueue: 256,
    requeueOnRestart: false,
    outputRetentionSeconds: null,
    shutdownTimeoutMs: 30000,
    allowUrlFetch: false,
    warmup: false,
    logLevel: 'info',
    componentPaths: {},
  });
  t.equal(c.server.maxBatchSize, undefined, 'no --max-batch-size: chosen by the device (4 on CUDA, 1 on the CPU)');
});

t.test('every kind of value', async (t) => {
  const c = serveConfig([
    '--model-path=/models/wan',
    '--host', '0.0.0.0',
    '--port=8080',
    '--output-path', '/tmp/o',
    '--device', 'cpu',
    '--api-key', 'sk-1',
    '--max-queue', '3',
    '--max-batch-size', '8',
    '--cors-origins', 'http://a.test, http://b.test',
    '--allow-url-fetch',
    '--output-retention', '24h',
    '--requeue-on-restart', 'true',
    '--shutdown-timeout', '90s',
    '--max-upload-mb', '2.5',
    '--warmup', 'false',
    '--text-encoder-cpu-offload',
    '--log-level', 'warn',
    '--vae-path', '/models/other-vae',
    '--text-encoder-path=/models/te',
    '--ulysses-degree', '1',
    '--no-enable-cfg-parallel',
  ]);
  if (c === 'help') throw new Error('unexpected help');
  t.equal(c.host, '0.0.0.0');
  t.equal(c.port, 8080);
  t.match(c.server, {
    modelPath: '/models/wan',
    outputPath: '/tmp/o',
    device: 'cpu',
    apiKey: 'sk-1',
    maxQueue: 3,
    maxBatchSize: 8,
    cors: ['http://a.test', 'http://b.test'],
    allowUrlFetch: true,
    outputRetentionSeconds: 86400,
    requeueOnRestart: true,
    shutdownTimeoutMs: 90000,
    maxUploadBytes: Math.round(2.5 * 1024 * 1024),
    warmup: false,
    textEncoderCpuOffload: true,
    logLevel: 'warn',
  });
  t.same(c.server.componentPaths, { vae: '/models/other-vae', text_encoder: '/models/te' });
});

t.test('bad flags are usage errors', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [[], /--model-path is required/],
    [['--model-path', 'demo:wan', '--bogus'], /unknown option --bogus/],
    [['--model-path', 'demo:wan', 'extra'], /unexpected argument 'extra'/],
    [['--model-path', 'demo:wan', '--port', 'abc'], /--port: expected an integer, got 'abc'/],
    [['--model-path', 'demo:wan', '--port', '70000'], /not a port number/],
    [['--model-path', 'demo:wan', '--port'], /--port needs a value/],
    [['--model-path', 'demo:wan', '--device', 'tpu'], /--device: expected one of cpu, cuda, auto/],
    [['--model-path', 'demo:wan', '--warmup=maybe'], /--warmup: expected true or false/],
    [['--model-path', 'demo:wan', '--max-queue', '0'], /--max-queue: must be greater than 0/],
    [['--model-path', 'demo:wan', '--max-batch-size', '0'], /--max-batch-size: must be greater than 0/],
    [['--model-path', 'demo:wan', '--max-batch-size', '1.5'], /--max-batch-size: expected an integer, got '1.5'/],
    [['--model-path', 'demo:wan', '--output-retention', 'soon'], /--output-retention: 'soon' is not a duration/],
    [['--model-path', 'demo:wan', '--num-gpus', '4', '--ulysses-degree', '2'], /^sp_degree \(4\) must equal ring_degree \* ulysses_degree \(1 \* 2 = 2\)$/],
    [['--model-path', 'demo:wan', '--enable-cfg-parallel'], /^CFG Parallelism is enabled via `--enable-cfg-parallel`, but num_gpus == 1$/],
    [['--model-path', 'demo:wan', '--num-gpus', '3', '--enable-cfg-parallel'], /^num_gpus \(3\) must be divisible by \(dp_size \* tp_size \* 2\) = 2$/],
    [['--model-path', 'demo:wan', '--ring-degree', '0'], /--ring-degree: must be greater than 0/],
    [['--model-path', 'demo:wan', '--lora-scale', '0.5'], /--lora-scale needs --lora-path/],
    [['--model-path', 'demo:wan', '--max-loras', '0'], /--max-loras: must be greater than 0/],
    [['--model-path', 'demo:wan', '--dit-precision', 'bf16'], /--dit-precision: precision is chosen by the pipeline/],
    [['--model-path', 'demo:wan', '--config', join(dir, 'missing.yaml')], /--config: cannot read/],
  ];
  for (const [argv, re] of cases) t.throws(() => serveConfig(argv), { name: 'UsageError', message: re }, argv.join(' '));
});

t.test('--lora-path, --lora-nickname, --lora-scale and --max-loras reach the server options', async (t) => {
  const c = serveConfig(['--model-path', 'demo:wan', '--lora-path', '/x.safetensors', '--lora-scale', '0.5', '--max-loras', '3']);
  if (c === 'help') throw new Error('unexpected help');
  t.equal(c.server.loraPath, '/x.safetensors');
  t.equal(c.server.loraNickname, 'default');
  t.equal(c.server.loraScale, 0.5);
  t.equal(c.server.maxLoras, 3);
  const none = serveConfig(['--model-path', 'demo:wan']);
  if (none === 'help') throw new Error('unexpected help');
  t.equal(none.server.loraPath, undefined, 'no LoRA unless asked');
});

t.test('--config JSON and YAML, flags win', async (t) => {
  const yaml = join(dir, 'serve.yaml');
  await writeFile(yaml, 'model_path: demo:wan\nport: 31000\nmax-queue: 7\ncors: true\noutput_retention: 2h\nvae_path: /v\n');
  const c = serveConfig(['--config', yaml, '--port', '32000']);
  if (c === 'help') throw new Error('unexpected help');
  t.equal(c.port, 32000, 'the flag wins');
  t.equal(c.server.modelPath, 'demo:wan');
  t.equal(c.server.maxQueue, 7);
  t.equal(c.server.cors, true);
  t.equal(c.server.outputRetentionSeconds, 7200);
  t.same(c.server.componentPaths, { vae: '/v' });

  const json = join(dir, 'serve.json');
  await writeFile(json, JSON.stringify({ 'model-path': '/m', warmup: true, 'max-upload-mb': 1 }));
  const j = serveConfig(['--config', json]);
  if (j === 'help') throw new Error('unexpected help');
  t.equal(j.server.modelPath, '/m');
  t.equal(j.server.warmup, true);
  t.equal(j.server.maxUploadBytes, 1024 * 1024);

  await writeFile(join(dir, 'bad.yaml'), 'model_path: demo:wan\nfrobnicate: 1\n');
  t.throws(() => serveConfig(['--config', join(dir, 'bad.yaml')]), /unknown option 'frobnicate'/);
  await writeFile(join(dir, 'bad.json'), '{"model_path": ');
  t.throws(() => serveConfig(['--config', join(dir, 'bad.json')]), /is not valid JSON/);
  await writeFile(join(dir, 'list.yaml'), '- a\n- b\n');
  t.throws(() => serveConfig(['--config', join(dir, 'list.yaml')]), /must hold a mapping/);
  await writeFile(join(dir, 'typed.yaml'), 'model_path: demo:wan\nport: eighty\n');
  t.throws(() => serveConfig(['--config', join(dir, 'typed.yaml')]), /--port: expected an integer/);
});

t.test('--help lists every flag', async (t) => {
  t.equal(serveConfig(['--help']), 'help');
  const text = formatHelp('usage', SERVE_FLAGS);
  for (const name of Object.keys(SERVE_FLAGS)) t.match(text, `--${name}`, name);
  // SPEC section 4: the flags shared by serve and generate
  for (const spec of [
    'model-path', 'host', 'port', 'output-path', 'num-gpus', 'ulysses-degree', 'ring-degree', 'enable-cfg-parallel',
    'text-encoder-cpu-offload', 'dit-cpu-offload', 'vae-cpu-offload', 'pin-cpu-memory', 'dit-precision', 'vae-precision',
    'attention-backend', 'lora-path', 'lora-nickname', 'lora-scale', 'warmup', 'api-key', 'max-queue', 'log-level', 'config', 'device',
  ]) {
    t.ok(SERVE_FLAGS[spec], `SPEC flag --${spec} is known`);
  }
});

t.test('parser details', async (t) => {
  t.equal(parseDuration('90'), 90);
  t.equal(parseDuration('1.5m'), 90);
  t.equal(parseDuration('7d'), 604800);
  const p = parseFlags(['--a', '--b', 'false', '--c=x'], {
    a: { type: 'boolean', help: '' },
    b: { type: 'boolean', help: '' },
    c: { type: 'string', help: '' },
  });
  t.same(p.values, { a: true, b: false, c: 'x' });
  t.throws(() => parseFlags(['--c', '--a'], { a: { type: 'boolean', help: '' }, c: { type: 'string', help: '' } }), UsageError);
});
