// npm run prebuild: compile the addon (and the CUDA library when nvcc is present) and copy
// the results to prebuilds/<platform>-<arch>/, where node-gyp-build finds them at load time.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const r = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'compile', '--log-level', 'warn'], {
  cwd: root,
  stdio: 'inherit',
});
if (r.status !== 0) process.exit(r.status ?? 1);
const out = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
mkdirSync(out, { recursive: true });
const release = join(root, 'build', 'Release');
copyFileSync(join(release, 'node_diffusion.node'), join(out, 'node-diffusion.napi.node'));
for (const f of readdirSync(release)) if (/^libnd_cuda\.so/.test(f)) copyFileSync(join(release, f), join(out, f));
console.log(`prebuilt addon written to ${out}${existsSync(join(out, 'libnd_cuda.so')) ? ' (with CUDA library)' : ''}`);
