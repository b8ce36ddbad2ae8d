// Host memory: large blocks freed by tensors are reused by the next tensors of their size class
// instead of being mapped (and page-faulted) anew; the cache can be turned off.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import t from 'tap';

import * as E from '../../lib/engine/index.js';

const script = fileURLToPath(new URL('../helpers/block-reuse-check.ts', import.meta.url));
function run(env: Record<string, string>): { faults: number; finite: boolean } {
  const out = execFileSync(process.execPath, ['--import=tsx', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
  return JSON.parse(out) as { faults: number; finite: boolean };
}

t.test('large tensors reuse freed blocks: 20 new 1.5 MB outputs take almost no page faults', async (t) => {
  const cached = run({});
  const uncached = run({ ND_CPU_BLOCK_CACHE_MB: '0' });
  t.ok(cached.finite && uncached.finite);
  // without reuse every output faults its 384 pages in
  t.ok(uncached.faults >= 20 * 384, `without the cache: ${uncached.faults} faults`);
  t.ok(cached.faults < uncached.faults / 10, `with the cache: ${cached.faults} faults (without: ${uncached.faults})`);
  const capped = run({ ND_CPU_BLOCK_CACHE_MB: '1' });
  t.ok(capped.faults >= 20 * 384, `blocks above a 1 MB cap are unmapped when freed: ${capped.faults} faults`);
});

t.test('reused blocks carry no stale values into zeros/full, and sizes of one class share blocks', async (t) => {
  E.scope(() => {
    const a = E.full([600, 1000], 7);
    a.dispose();
    const z = E.zeros([600, 1000]);
    t.ok(z.toFloat32().every((v) => v === 0), 'zeros over a reused block');
    z.dispose();
    const b = E.full([601, 999], 3); // same size class, another shape
    t.ok(b.toFloat32().every((v) => v === 3));
  });
});
