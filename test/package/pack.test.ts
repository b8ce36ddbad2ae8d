// The published package: `npm pack` ships what a user needs at run time and nothing big by
// accident, and the tarball installed into an empty folder loads its prebuilt addon from
// prebuilds/ without compiling (scripts/install.mjs says which path it took; no build/ appears).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

import t from 'tap';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const platformDir = `${process.platform}-${process.arch}`;
const prebuiltAddon = join(root, 'prebuilds', platformDir, 'node-diffusion.napi.node');
const localAddon = join(root, 'build', 'Release', 'node_diffusion.node');
const localCudaLibrary = join(root, 'build', 'Release', 'libnd_cuda.so');

/**
 * The environment of the commands run here: the outer `npm test` and tap leave variables that
 * would redirect npm (npm_config_local_prefix, npm_package_*) or load tsx into plain node
 * (NODE_OPTIONS); npm's cache, registry and config files are kept so the install stays offline.
 */
function cleanEnv(): NodeJS.ProcessEnv {
  const keep = new Set(['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig', 'npm_config_globalconfig', 'npm_config_nodedir']);
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    const lower = k.toLowerCase();
    if (lower.startsWith('npm_') && !keep.has(lower)) continue;
    if (k.startsWith('TAP') || k === 'NODE_OPTIONS' || k === 'INIT_CWD' || k === 'NODE_DIFFUSION_PREBUILD' || k === 'ND_FORCE_BUILD') continue;
    env[k] = v;
  }
  return env;
}

/** Runs a command to completion within timeoutS seconds (killed after that) and returns stdout. */
function run(cmd: string, args: string[], cwd: string, timeoutS: number): { stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, {
    cwd,
    env: cleanEnv(),
    encoding: 'utf8',
    timeout: timeoutS * 1000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 << 20,
  });
  const line = `${cmd} ${args.join(' ')} (in ${cwd})`;
  if (r.error) throw new Error(`${line}: ${r.error.message}`);
  if (r.signal) throw new Error(`${line}: killed by ${r.signal} (time limit ${timeoutS} s)\n${r.stdout}\n${r.stderr}`);
  if (r.status !== 0) throw new Error(`${line}: exit code ${r.status}\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  return { stdout: r.stdout, stderr: r.stderr };
}

function listFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else out.push(relative(base, p));
  }
  return out;
}

// The prebuild: made here when missing, or when the local build is newer than it.
const cudaBuilt = existsSync(localCudaLibrary);
const prebuildStale =
  !existsSync(prebuiltAddon) ||
  (existsSync(localAddon) && statSync(localAddon).mtimeMs > statSync(prebuiltAddon).mtimeMs) ||
  (cudaBuilt && !existsSync(join(root, 'prebuilds', platformDir, 'libnd_cuda.so')));
if (prebuildStale) run(process.execPath, [join(root, 'scripts', 'prebuild.mjs')], root, 480);

const work = mkdtempSync(join(tmpdir(), 'nd-pack-'));
t.teardown(() => rmSync(work, { recursive: true, force: true }));

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}
// prepack empties dist/ and prepare compiles it again, so the tarball carries exactly lib/'s output.
const packed = run('npm', ['pack', '--json', '--pack-destination', work], root, 300);
const pack = (JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as PackResult[])[0] as PackResult;
const shipped = new Map(pack.files.map((f) => [f.path, f.size]));

t.test('the tarball holds what runs and what builds from source', async (t) => {
  const required = [
    'package.json',
    'README.md',
    'bin/node-diffusion.js',
    'scripts/install.mjs',
    'CMakeLists.txt',
    'csrc/core/tensor.h',
    'csrc/napi/common.h',
    'csrc/cuda/CMakeLists.txt',
    'dist/index.js',
    'dist/index.d.ts',
    'dist/cli/main.js',
    'dist/runtime/worker.js',
    'assets/demo-wan-tokenizer/tokenizer.json',
    `prebuilds/${platformDir}/node-diffusion.napi.node`,
  ];
  if (cudaBuilt) required.push(`prebuilds/${platformDir}/libnd_cuda.so`);
  for (const f of required) t.ok(shipped.has(f), `ships ${f}`);

  // every module of lib/ compiled, and nothing in dist/ without a source
  const sources = listFiles(join(root, 'lib'))
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => `dist/${f.replace(/\.ts$/, '.js')}`)
    .sort();
  const compiled = [...shipped.keys()].filter((f) => f.startsWith('dist/') && f.endsWith('.js')).sort();
  t.same(compiled, sources, 'dist/ is exactly the compiled lib/');

  const csrc = listFiles(join(root, 'csrc')).filter((f) => /\.(h|cpp|cu|cuh|txt)$/.test(f));
  t.same(csrc.filter((f) => !shipped.has(`csrc/${f}`)), [], 'every native source is shipped');

  const unwanted = [...shipped.keys()].filter((f) =>
    /^(test|bench|lib|build|node_modules|outputs|\.ci|\.tap)\//.test(f) || /\.(tgz|safetensors)$/.test(f),
  );
  t.same(unwanted, [], 'no tests, fixtures, benchmarks, TypeScript sources or build trees');

  // sizes: everything but the binaries is text (sources, compiled JS, the demo tokenizer)
  const binaries = [...shipped].filter(([f]) => f.startsWith('prebuilds/')).reduce((s, [, n]) => s + n, 0);
  t.ok(pack.unpackedSize - binaries < 4 << 20, `text files ${((pack.unpackedSize - binaries) / 2 ** 20).toFixed(2)} MiB < 4 MiB`);
  t.ok(binaries < 64 << 20, `binaries ${(binaries / 2 ** 20).toFixed(2)} MiB < 64 MiB`);
});

t.test('installed into an empty folder, it loads the prebuilt addon without compiling', async (t) => {
  const app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'nd-pack-check', version: '1.0.0', private: true }));
  // --ignore-scripts: the other dependencies' install scripts (better-sqlite3 compiles SQLite
  // when its prebuilt binary cannot be downloaded) are not under test and would only cost
  // minutes; node-diffusion's own install script then runs alone through `npm rebuild`.
  const tarball = join(work, pack.filename);
  run('npm', ['install', tarball, '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], app, 300);
  const installed = join(app, 'node_modules', 'node-diffusion');
  const rebuilt = run('npm', ['rebuild', 'node-diffusion', '--foreground-scripts'], app, 120);
  t.match(
    rebuilt.stdout,
    `node-diffusion: using the native addon prebuilds/${platformDir}/node-diffusion.napi.node (no compilation)`,
    'install.mjs took the prebuilt addon',
  );
  t.notMatch(rebuilt.stdout, /compiling/, 'install.mjs did not compile');
  t.notOk(existsSync(join(installed, 'build')), 'no build/ folder in the installed package');

  // Load it as a user would: the package's entry, a tensor, a basic op and a GEMM.
  const script = `
    import { createRequire } from 'node:module';
    const { engine } = await import('node-diffusion');
    const require = createRequire(process.cwd() + '/node_modules/node-diffusion/package.json');
    const a = engine.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const b = engine.tensor(new Float32Array([1, 0, -1, 2, 1, 0]), [3, 2]);
    const addons = process.report.getReport().sharedObjects.filter((p) => p.endsWith('.node'));
    console.log(JSON.stringify({
      sum: engine.add(a, a).toArray(),
      product: engine.matmul(a, b).toArray(),
      resolved: require('node-gyp-build').path(process.cwd() + '/node_modules/node-diffusion'),
      addons,
      cudaLibrary: engine.cudaInfo().library,
    }));`;
  const loaded = JSON.parse(run(process.execPath, ['--input-type=module', '-e', script], app, 120).stdout) as {
    sum: number[];
    product: number[];
    resolved: string;
    addons: string[];
    cudaLibrary: { path: string; present: boolean; loaded: boolean; error: string };
  };
  t.same(loaded.sum, [2, 4, 6, 8, 10, 12], 'add runs in the installed package');
  t.same(loaded.product, [2, 4, 5, 10], 'matmul runs in the installed package');
  const prebuildDir = join(realpathSync(installed), 'prebuilds', platformDir);
  t.equal(loaded.resolved, join(installed, 'prebuilds', platformDir, 'node-diffusion.napi.node'), 'node-gyp-build picks the prebuild');
  t.ok(
    loaded.addons.some((p) => realpathSync(p) === join(prebuildDir, 'node-diffusion.napi.node')),
    `the process mapped the prebuilt addon (${loaded.addons.join(', ')})`,
  );
  // The CUDA loader looks next to the .node file it runs from (dladdr): the prebuilds folder.
  t.equal(dirname(loaded.cudaLibrary.path), prebuildDir, 'the CUDA library is looked for next to the prebuilt addon');
  if (cudaBuilt) {
    t.ok(loaded.cudaLibrary.present && loaded.cudaLibrary.loaded, `libnd_cuda.so loads from prebuilds/ (${loaded.cudaLibrary.error})`);
  } else {
    t.notOk(loaded.cudaLibrary.present, 'no CUDA library shipped without nvcc');
  }

  // The command-line entry, through the bin link npm made.
  const bin = join(app, 'node_modules', '.bin', 'node-diffusion');
  t.match(run(process.execPath, [bin, '--help'], app, 60).stdout, /^Usage: node-diffusion <command>/, 'node-diffusion --help');
  const version = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }).version;
  t.equal(run(process.execPath, [bin, '--version'], app, 60).stdout.trim(), version, 'node-diffusion --version');
});
