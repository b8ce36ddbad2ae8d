// The parallel layout flags: upstream's defaults and its error messages for layouts that do not fit.
import t from 'tap';

import { checkHeads, rankPlace, resolveParallelConfig } from '../../lib/parallel/config.js';

t.test('defaults as upstream: sp takes the GPUs CFG leaves, Ulysses takes sp unless a degree is given', async (t) => {
  t.same(resolveParallelConfig({}), { worldSize: 1, spDegree: 1, ulyssesDegree: 1, ringDegree: 1, cfgDegree: 1 });
  t.same(resolveParallelConfig({ numGpus: 4 }), { worldSize: 4, spDegree: 4, ulyssesDegree: 4, ringDegree: 1, cfgDegree: 1 });
  t.same(resolveParallelConfig({ numGpus: 4, ulyssesDegree: 2, ringDegree: 2 }), { worldSize: 4, spDegree: 4, ulyssesDegree: 2, ringDegree: 2, cfgDegree: 1 });
  t.same(resolveParallelConfig({ numGpus: 4, ringDegree: 4 }), { worldSize: 4, spDegree: 4, ulyssesDegree: 1, ringDegree: 4, cfgDegree: 1 });
  t.same(resolveParallelConfig({ numGpus: 2, enableCfgParallel: true }), { worldSize: 2, spDegree: 1, ulyssesDegree: 1, ringDegree: 1, cfgDegree: 2 });
  t.same(resolveParallelConfig({ numGpus: 8, enableCfgParallel: true, ringDegree: 2, ulyssesDegree: 2 }), { worldSize: 8, spDegree: 4, ulyssesDegree: 2, ringDegree: 2, cfgDegree: 2 });
});

t.test('layouts that do not fit fail with upstream\'s messages', async (t) => {
  const cases: Array<[Parameters<typeof resolveParallelConfig>[0], string]> = [
    [{ numGpus: 1, enableCfgParallel: true }, 'CFG Parallelism is enabled via `--enable-cfg-parallel`, but num_gpus == 1'],
    [{ numGpus: 4, ulyssesDegree: 2 }, 'sp_degree (4) must equal ring_degree * ulysses_degree (1 * 2 = 2)'],
    [{ numGpus: 4, ulyssesDegree: 2, ringDegree: 3 }, 'sp_degree (4) must equal ring_degree * ulysses_degree (3 * 2 = 6)'],
    [{ numGpus: 3, enableCfgParallel: true }, 'num_gpus (3) must be divisible by (dp_size * tp_size * 2) = 2'],
    [{ numGpus: 4, spDegree: 3 }, 'num_gpus (4) must be >= and divisible by sp_degree (3)'],
    [{ numGpus: 2, spDegree: 4 }, 'num_gpus (2) must be >= and divisible by sp_degree (4)'],
    [{ numGpus: 4, spDegree: 2, ulyssesDegree: 2 }, 'num_gpus (4) must equal sp_degree * cfg_degree (2 * 1 = 2): data parallelism is not supported'],
    [{ numGpus: 0 }, 'num_gpus must be a positive integer, got 0'],
    [{ numGpus: 2, ringDegree: 1.5 }, 'ring_degree must be a positive integer, got 1.5'],
  ];
  for (const [opts, message] of cases) t.throws(() => resolveParallelConfig(opts), { name: 'ParallelConfigError', message }, JSON.stringify(opts));
  const c = resolveParallelConfig({ numGpus: 8, ulyssesDegree: 8 });
  t.throws(() => checkHeads(c, 12), { message: 'num_attention_heads (12) must be divisible by ulysses_degree (8)' });
  t.doesNotThrow(() => checkHeads(resolveParallelConfig({ numGpus: 4, ulyssesDegree: 4 }), 12));
});

t.test('rank places', async (t) => {
  const c = resolveParallelConfig({ numGpus: 8, enableCfgParallel: true, ulyssesDegree: 2, ringDegree: 2 });
  t.same(rankPlace(c, 0), { rank: 0, cfgRank: 0, spRank: 0, ulyssesRank: 0, ringRank: 0 });
  t.same(rankPlace(c, 3), { rank: 3, cfgRank: 0, spRank: 3, ulyssesRank: 1, ringRank: 1 });
  t.same(rankPlace(c, 6), { rank: 6, cfgRank: 1, spRank: 2, ulyssesRank: 0, ringRank: 1 });
  t.throws(() => rankPlace(c, 8), RangeError);
});
