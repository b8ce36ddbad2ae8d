// npm install hook: use a prebuilt addon (prebuilds/<platform>-<arch>/) or a previous local
// build when one loads; otherwise compile from source with cmake-js (no network needed:
// headers come from node-api-headers and node-addon-api). Says which path it took.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Path of the addon node-gyp-build loads from this package, or the reason none loads. */
function loadable() {
  const gypBuild = require('node-gyp-build');
  try {
    const path = gypBuild.path(root);
    require(path);
    return { path };
  } catch (err) {
    return { reason: err instanceof Error ? err.message.split('\n')[0] : String(err) };
  }
}

if (process.env.ND_FORCE_BUILD !== '1') {
  const found = loadable();
  if (found.path) {
    console.log(`node-diffusion: using the native addon ${relative(root, found.path)} (no compilation)`);
    process.exit(0);
  }
  console.log(`node-diffusion: no usable native addon (${found.reason}); compiling it with cmake-js`);
} else {
  console.log('node-diffusion: ND_FORCE_BUILD=1; compiling the native addon with cmake-js');
}
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--log-level', 'warn', '--parallel', String(availableParallelism())];
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('node-diffusion: building the native addon failed (needs cmake >= 3.18 and a C++17 compiler)');
  process.exit(r.status ?? 1);
}
