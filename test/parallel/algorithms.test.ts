// Sequence-parallel attention between real rank processes (Ulysses, ring, Ulysses x ring, with the
// padding of odd lengths masked out) against attention on one rank; the group layout; CFG-parallel
// combination; the exact merge of attention partials.
import t from 'tap';

import { attention, attentionWithLse } from '../../lib/engine/ops/linalg.js';
import { full, randn, scope } from '../../lib/engine/tensor.js';
import { mergeAttention } from '../../lib/parallel/attention.js';
import { relL2 } from '../helpers/numeric.js';
import type { AttentionArgs } from './algorithms.scenarios.js';
import { startRanks } from './ranks.js';

type AttentionResult = { rel: number; shape: number[]; localLength: number; paddedLength: number };

t.test('merging attention partials over disjoint keys is exact; an empty partial weighs nothing', async (t) => {
  scope(() => {
    const [q, k, v] = [1, 2, 3].map((s) => randn([2, 3, 7, 8], { seed: s })) as [ReturnType<typeof randn>, ReturnType<typeof randn>, ReturnType<typeof randn>];
    const reference = attention(q, k, v).contiguous().toFloat32();
    const a = attentionWithLse(q, k.slice(2, 0, 4), v.slice(2, 0, 4));
    const b = attentionWithLse(q, k.slice(2, 4, 7), v.slice(2, 4, 7));
    const merged = mergeAttention(a, b);
    t.ok(relL2(merged.out.contiguous().toFloat32(), reference) < 1e-6, 'two halves');
    const whole = attentionWithLse(q, k, v);
    t.ok(relL2(merged.lse.toFloat32(), whole.lse.toFloat32()) < 1e-6, 'log-sum-exp of the union');
    const empty = attentionWithLse(q, k, v, { kvLens: full([2], 0, { dtype: 'int32' }) });
    t.same(new Set(empty.lse.toArray()), new Set([-Infinity]), 'no keys: lse -inf');
    const withEmpty = mergeAttention(empty, whole);
    t.ok(relL2(withEmpty.out.contiguous().toFloat32(), reference) < 1e-7, 'empty + all = all');
    const bothEmpty = mergeAttention(empty, empty);
    t.same(new Set(bothEmpty.out.toArray()), new Set([0]), 'empty + empty = 0, not NaN');
  });
});

const LAYOUTS: Record<number, Array<[number, number]>> = {
  2: [[2, 1], [1, 2]],
  4: [[4, 1], [1, 4], [2, 2]],
};

for (const size of [2, 4]) {
  t.test(`${size} ranks`, async (t) => {
    const pool = await startRanks(size, 'algorithms.scenarios.ts');
    t.teardown(() => pool.close());

    t.test('sharded self-attention equals attention on one rank (f32, rel-L2 <= 1e-5)', async (t) => {
      // 16: even shards; 13 and 7: padded last shard; 5 on 4 ranks: a shard of padding only
      for (const [ulysses, ring] of LAYOUTS[size] as Array<[number, number]>)
        for (const L of [16, 13, 7, 5]) {
          const args: AttentionArgs = { ulysses, ring, L, B: 2, H: 4, D: 8, seed: L };
          const got = await pool.run<AttentionResult>('attention', args);
          const local = Math.ceil(L / size);
          for (const [r, g] of got.entries()) {
            t.same(g.shape, [2, L, 4, 8], `ulysses ${ulysses} x ring ${ring}, L ${L}: shape on rank ${r}`);
            t.same([g.localLength, g.paddedLength], [local, local * size]);
            t.ok(g.rel <= 1e-5, `ulysses ${ulysses} x ring ${ring}, L ${L}: rel-L2 ${g.rel.toExponential(2)} on rank ${r}`);
          }
        }
    });

    t.test('group layout as upstream: rank = sp_rank + cfg_rank * sp, Ulysses inside ring', async (t) => {
      if (size === 2) {
        const cfg = await pool.run('layout', { enableCfgParallel: true });
        t.same(cfg.map((g: any) => [g.cfg, g.sp]), [[[0, 1], [0]], [[0, 1], [1]]]);
        return;
      }
      const usp = await pool.run<any>('layout', { ulyssesDegree: 2, ringDegree: 2 });
      t.same(usp.map((g) => [g.ulysses, g.ring, g.sp]), [
        [[0, 1], [0, 2], [0, 1, 2, 3]],
        [[0, 1], [1, 3], [0, 1, 2, 3]],
        [[2, 3], [0, 2], [0, 1, 2, 3]],
        [[2, 3], [1, 3], [0, 1, 2, 3]],
      ]);
      const cfg = await pool.run<any>('layout', { enableCfgParallel: true });
      t.same(cfg.map((g) => [g.place.cfgRank, g.cfg, g.sp, g.ulysses, g.ring]), [
        [0, [0, 2], [0, 1], [0, 1], [0]],
        [0, [1, 3], [0, 1], [0, 1], [1]],
        [1, [0, 2], [2, 3], [2, 3], [2]],
        [1, [1, 3], [2, 3], [2, 3], [3]],
      ]);
    });

    t.test('CFG-parallel: both ranks get uncond + s * (cond - uncond), bit for bit', async (t) => {
      const got = await pool.run<{ identical: boolean; cfgRank: number }>('cfg');
      t.same(got.map((g) => g.cfgRank), Array.from({ length: size }, (_, r) => Math.floor(r / (size / 2))));
      for (const g of got) t.ok(g.identical);
    });
  });
}
