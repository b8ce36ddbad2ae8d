// npm install hook: use a prebuilt addon (prebuilds/<platform>-<arch>/) or a previous local
// build when one loads; otherwise compile from source with cmake-js (no network needed:
// headers come from node-api-headers and node-addon-api).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function loads() {
  try {
    require('node-gyp-build')(root);
    return true;
  } catch {
    return false;
  }
}

if (process.env.ND_FORCE_BUILD !== '1' && loads()) {
  console.log('node-diffusion: using the existing native addon');
  process.exit(0);
}
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
const args = [cmakeJs, 'compile', '--log-level', 'warn'];
const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('node-diffusion: building the native addon failed (needs cmake >= 3.18 and a C++17 compiler)');
  process.exit(r.status ?? 1);
}
