// The shared-memory communicator between real rank processes: every collective with odd shapes and
// every dtype on 2 and 4 ranks, transfers larger than the exchange slot (chunked), point to point,
// sub-communicators, mismatched calls and peers that die.
import t from 'tap';

import { DTYPES } from './collectives.scenarios.js';
import { blockOf, concatAlong, expectedOut, type Out, sumOf, valuesOf } from './expected.js';
import { startRanks } from './ranks.js';

// 64 KiB exchange slots, so the larger cases below go through in several pieces
const SMALL_SLOTS = { ND_SHM_SLOT_MB: '0.0625' };

for (const size of [2, 4]) {
  t.test(`${size} ranks`, async (t) => {
    const pool = await startRanks(size, 'collectives.scenarios.ts', { env: SMALL_SLOTS });
    t.teardown(() => pool.close());

    t.test('allGather: every dtype, every dim of an odd shape', async (t) => {
      const shape = [3, 5, 7];
      for (const dtype of DTYPES)
        for (const dim of [0, 1, 2]) {
          const got = await pool.run<Out>('allGather', { dtype, shape, dim });
          got.forEach((g, r) => t.same(g, expectedOut('allGather', { dtype, shape, dim }, size, r), `${dtype} dim ${dim}`));
        }
    });

    t.test('allToAll: every dtype, scatter and gather dims', async (t) => {
      const shape = [2, 3 * size, 5];
      for (const dtype of DTYPES)
        for (const [scatter, gather] of [[1, 0], [1, 2], [1, 1]] as const) {
          const args = { dtype, shape, scatter, gather };
          const got = await pool.run<Out>('allToAll', args);
          got.forEach((g, r) => t.same(g, expectedOut('allToAll', args, size, r), `${dtype} ${scatter}->${gather} on rank ${r}`));
        }
    });

    t.test('allReduce: every dtype (sums in rank order; integers wrap)', async (t) => {
      for (const dtype of DTYPES)
        for (const shape of [[1], [13], [3, 7, 11]]) {
          const got = await pool.run<Out>('allReduce', { dtype, shape });
          got.forEach((g, r) => t.same(g, expectedOut('allReduce', { dtype, shape }, size, r), `${dtype} [${shape}]`));
        }
    });

    t.test('broadcast from each root, every dtype', async (t) => {
      for (const dtype of DTYPES)
        for (let root = 0; root < size; ++root) {
          const got = await pool.run<Out>('broadcast', { dtype, shape: [5, 3], root });
          for (const g of got) t.same(g, { shape: [5, 3], values: valuesOf(dtype, root, [5, 3]) }, `${dtype} root ${root}`);
        }
      const values = await pool.run('broadcastValue', { root: size - 1 });
      for (const v of values) t.same(v, { from: size - 1, text: 'Grüße ✓', list: [1, 2, 3] });
    });

    t.test('point to point: ring shifts and send/recv', async (t) => {
      for (const dtype of DTYPES) {
        const got = await pool.run<Out>('ringShift', { dtype, shape: [4, 9] });
        got.forEach((g, r) => t.same(g, expectedOut('ringShift', { dtype, shape: [4, 9] }, size, r), `${dtype} to rank ${r}`));
      }
      const got = await pool.run<Out[]>('pointToPoint', { shape: [3, 3] });
      t.same(got[0], Array.from({ length: size - 1 }, (_, i) => ({ shape: [3, 3], values: valuesOf('float32', 201 + i, [3, 3]) })));
      for (let r = 1; r < size; ++r) t.same(got[r], [{ shape: [3, 3], values: valuesOf('float32', 100 + r, [3, 3]) }]);
    });

    t.test('transfers larger than the exchange slot go through in pieces', async (t) => {
      const big = [7, 4099]; // 112 KiB of float32 per rank
      const gathered = await pool.run<Out>('allGather', { dtype: 'float32', shape: big, dim: 1 });
      const want = concatAlong(Array.from({ length: size }, (_, r) => valuesOf('float32', r, big)), big, 1);
      for (const g of gathered) t.same(g, want, 'allGather');
      const a2aShape = [2 * size, 4099, 2];
      const exchanged = await pool.run<Out>('allToAll', { dtype: 'float32', shape: a2aShape, scatter: 0, gather: 2 });
      exchanged.forEach((g, r) => {
        const blocks = Array.from({ length: size }, (_, s) => blockOf(valuesOf('float32', s, a2aShape), a2aShape, 0, size, r));
        t.same(g, concatAlong(blocks.map((b) => b.values), blocks[0]!.shape, 2), `allToAll on rank ${r}`);
      });
      const reduced = await pool.run<Out>('allReduce', { dtype: 'bfloat16', shape: [40001] });
      for (const g of reduced) t.same(g.values, sumOf('bfloat16', size, [40001]), 'allReduce');
      const shifted = await pool.run<Out>('ringShift', { dtype: 'int64', shape: [3, 5003] });
      shifted.forEach((g, r) => t.same(g.values, valuesOf('int64', (r - 1 + size) % size, [3, 5003]), `sendRecv to rank ${r}`));
      const sent = await pool.run<Out>('broadcast', { dtype: 'uint8', shape: [200003], root: size - 1 });
      for (const g of sent) t.same(g.values, valuesOf('uint8', size - 1, [200003]), 'broadcast');
    });

    t.test('sub-communicators: even and odd ranks, ordered by key', async (t) => {
      const got = await pool.run<{ rank: number; size: number; worldRanks: number[]; gathered: number[] }>('split');
      got.forEach((g, r) => {
        const members = Array.from({ length: size }, (_, i) => i).filter((i) => i % 2 === r % 2).reverse();
        t.same(g, { rank: members.indexOf(r), size: members.length, worldRanks: members, gathered: members }, `rank ${r}`);
      });
    });

    t.test('bad calls fail with clear errors and leave the group usable', async (t) => {
      const got = await pool.run<{ message: string; after: number }>('mismatch');
      for (const [r, g] of got.entries()) {
        t.match(g.message, /^allGather on group 0: rank \d+ called allGather of (12|16) bytes, this rank \(\d\) allGather of (12|16) bytes$/, `rank ${r}`);
        t.equal(g.after, size, 'the next collective works');
      }
      const errors = await pool.run<string[]>('badArguments');
      for (const e of errors)
        t.same(e, [
          `allToAll: dim 0 of [3] does not split into ${size} equal blocks`,
          `send: rank ${size} is not in this group of ${size}`,
          `broadcast: rank -1 is not in this group of ${size}`,
          'split: color must be an integer >= 0, got -1',
        ]);
    });

    t.test('a rank killed while the others wait: they fail naming it', async (t) => {
      const victim = size - 1;
      const pending = pool.settle('stall', { stalls: victim });
      setTimeout(() => pool.kill(victim), 300);
      const got = await pending;
      t.match(got[victim]?.error, /exited \(SIGKILL\)/);
      for (let r = 0; r < victim; ++r)
        t.equal((got[r]?.value as { message: string }).message, `barrier: rank ${victim} (process ${pool.pids[victim]}) has exited`);
    });
  });
}

t.test('a rank that exits: the others fail naming it instead of waiting', async (t) => {
  const pool = await startRanks(3, 'collectives.scenarios.ts');
  t.teardown(() => pool.close());
  const got = await pool.settle('peerDies', { dies: 1 });
  t.match(got[1]?.error, /exited \(3\)/);
  for (const r of [0, 2]) {
    const v = got[r]?.value as { message: string; ms: number };
    t.match(v.message, /^barrier: rank 1 (\(process \d+\) has exited|closed its communicator)$/);
    t.ok(v.ms < 5000, `noticed within ${v.ms} ms`);
  }
});
