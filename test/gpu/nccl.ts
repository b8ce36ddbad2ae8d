// The NCCL part of `npm run test:gpu`: the collectives of test/parallel (every dtype, odd shapes,
// sub-communicators) on one rank per CUDA device of the machine (a single rank on a one-GPU
// machine), checked against the values computed in JS; with two or more devices also the
// sequence-parallel attention and the golden Wan DiT with split tokens against one device.
// ND_TEST_TARGET=cpu runs the same cases on two CPU ranks over shared memory (checks the cases).
import { cudaInfo } from '../../lib/engine/device.js';
import { ncclInfo, ncclVersionString } from '../../lib/parallel/nccl.js';
import { DTYPES } from '../parallel/collectives.scenarios.js';
import { expectedOut, type Out } from '../parallel/expected.js';
import { startRanks } from '../parallel/ranks.js';

interface Row {
  name: string;
  ok: boolean;
  note: string;
}

/** Runs the checks; prints a table and returns the number of failures. */
export async function runNcclChecks(target: 'cuda' | 'cpu'): Promise<number> {
  let size: number;
  if (target === 'cuda') {
    const info = ncclInfo();
    if (!info.available) {
      console.log(`\nNCCL checks skipped: ${info.reason}`);
      return 0;
    }
    size = cudaInfo().devices.length;
    console.log(`\nNCCL ${ncclVersionString(info.version)} (${info.path}): ${size} rank(s), one per CUDA device`);
  } else {
    size = 2;
    console.log('\nNCCL cases on 2 CPU ranks over shared memory (ND_TEST_TARGET=cpu)');
  }
  const pool = await startRanks(size, ['collectives.scenarios.ts', 'algorithms.scenarios.ts'], {
    transport: target === 'cuda' ? 'nccl' : 'shm',
  });
  const rows: Row[] = [];
  const check = async (name: string, fn: () => Promise<string>) => {
    try {
      const note = await fn();
      rows.push({ name, ok: note === '', note });
    } catch (err) {
      rows.push({ name, ok: false, note: (err as Error).message.split('\n')[0] ?? 'error' });
    }
  };
  const collective = (scenario: string, args: Record<string, unknown>) => async () => {
    const got = await pool.run<Out>(scenario, args);
    const bad = got.findIndex((g, r) => JSON.stringify(g) !== JSON.stringify(expectedOut(scenario, args, size, r)));
    return bad < 0 ? '' : `rank ${bad} got other values`;
  };
  try {
    for (const dtype of DTYPES) {
      await check(`allGather ${dtype}`, collective('allGather', { dtype, shape: [3, 5, 7], dim: 1 }));
      await check(`allToAll ${dtype}`, collective('allToAll', { dtype, shape: [2, 3 * size, 5], scatter: 1, gather: 2 }));
      await check(`broadcast ${dtype}`, collective('broadcast', { dtype, shape: [5, 3], root: size - 1 }));
      await check(`sendRecv ring ${dtype}`, collective('ringShift', { dtype, shape: [4, 9] }));
      if (dtype === 'float8_e4m3' && target === 'cuda') {
        await check(`allReduce ${dtype} refused`, async () => {
          const got = await pool.settle('allReduce', { dtype, shape: [13] });
          return got.every((g) => /NCCL allReduce does not sum float8_e4m3 tensors/.test(g.error ?? '')) ? '' : 'expected a clear error';
        });
      } else {
        await check(`allReduce ${dtype}`, collective('allReduce', { dtype, shape: [3, 7, 11] }));
      }
    }
    await check('allGather float32, 1.1 MB per rank', collective('allGather', { dtype: 'float32', shape: [7, 40999], dim: 0 }));
    await check('broadcastValue', async () => {
      const got = await pool.run('broadcastValue', { root: size - 1 });
      return got.every((g) => JSON.stringify(g) === JSON.stringify({ from: size - 1, text: 'Grüße ✓', list: [1, 2, 3] })) ? '' : 'other values';
    });
    await check('sub-communicators', async () => {
      const got = await pool.run<{ worldRanks: number[]; gathered: number[] }>('split');
      return got.every((g) => JSON.stringify(g.worldRanks) === JSON.stringify(g.gathered)) ? '' : 'other members';
    });
    if (size >= 2) {
      const layouts: Array<[number, number]> = [];
      for (let u = 1; u <= size; ++u) if (size % u === 0 && 4 % u === 0) layouts.push([u, size / u]);
      for (const [ulysses, ring] of layouts)
        for (const dtype of ['float32', 'bfloat16'] as const)
          await check(`attention ulysses ${ulysses} x ring ${ring}, 13 tokens, ${dtype}`, async () => {
            const got = await pool.run<{ rel: number }>('attention', { ulysses, ring, dtype, L: 13, B: 2, H: 4, D: 64, seed: 5 });
            const worst = Math.max(...got.map((g) => g.rel));
            return worst <= (dtype === 'float32' ? 1e-5 : 1e-2) ? '' : `rel-L2 ${worst.toExponential(2)}`;
          });
      for (const [ulysses, ring] of layouts.filter(([u]) => 2 % u === 0))
        await check(`golden Wan DiT, ulysses ${ulysses} x ring ${ring}`, async () => {
          const got = await pool.run<{ relToSingle: number }>('transformer', { ulyssesDegree: ulysses, ringDegree: ring });
          const worst = Math.max(...got.map((g) => g.relToSingle));
          return worst <= 1e-5 ? '' : `rel-L2 to one device ${worst.toExponential(2)}`;
        });
    }
  } finally {
    await pool.close();
  }
  const width = Math.max(...rows.map((r) => r.name.length));
  for (const r of rows) console.log(`${r.name.padEnd(width)}  ${r.ok ? 'ok' : `FAIL ${r.note}`}`);
  const failed = rows.filter((r) => !r.ok).length;
  console.log(`${rows.length - failed}/${rows.length} NCCL checks passed`);
  return failed;
}
