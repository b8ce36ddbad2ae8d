// npm run prebuild: compile the addon (and the CUDA library when nvcc is present) and copy the
// results to prebuilds/<platform>-<arch>/, where node-gyp-build finds them at load time. The addon
// is named node-diffusion.napi.node (one N-API build serves every Node >= 20); the CUDA loader looks
// for libnd_cuda.so in the directory of the loaded .node file, so the library goes next to it.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

// A build configured with -march=native runs only on CPUs like this one: not something to ship.
const cache = join(root, 'build', 'CMakeCache.txt');
if (existsSync(cache) && /^ND_NATIVE:BOOL=(ON|1|TRUE|YES)$/im.test(readFileSync(cache, 'utf8'))) {
  console.error('prebuild: build/ is configured with ND_NATIVE=ON (-march=native); remove build/ and run again');
  process.exit(1);
}

const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const r = spawnSync(
  process.execPath,
  [cmakeJs, 'compile', '--log-level', 'warn', '--parallel', String(availableParallelism())],
  { cwd: root, stdio: 'inherit' },
);
if (r.status !== 0) process.exit(r.status ?? 1);

const release = join(root, 'build', 'Release');
const out = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(out, { recursive: true });

// Copy through a temporary name and rename: a process that has the old file mapped keeps its
// inode instead of seeing the file rewritten under it.
function install(src, name) {
  const tmp = join(out, `.${name}.tmp`);
  copyFileSync(src, tmp);
  renameSync(tmp, join(out, name));
}

install(join(release, 'node_diffusion.node'), 'node-diffusion.napi.node');
const cudaLibraries = readdirSync(release).filter((f) => /^libnd_cuda\.so/.test(f));
for (const f of cudaLibraries) install(join(release, f), f);
// A CUDA library left from an earlier prebuild would not match the addon just copied.
if (cudaLibraries.length === 0) {
  for (const f of readdirSync(out)) if (/^libnd_cuda\.so/.test(f)) rmSync(join(out, f));
}
console.log(`prebuilt addon written to ${out}${cudaLibraries.length > 0 ? ' (with the CUDA library)' : ' (CPU only: nvcc was not found)'}`);
