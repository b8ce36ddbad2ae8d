// The TCP rendezvous that hands rank 0's NCCL id to the other ranks (as torchrun's store), and the
// torchrun-style environment.
import t from 'tap';

import { exchangeUniqueId, freeLocalPort, rankFromEnv } from '../../lib/parallel/rendezvous.js';

const idOf = (seed: number) => Uint8Array.from({ length: 128 }, (_, i) => (i * 31 + seed) % 256);

t.test('every rank gets rank 0\'s id, whoever starts first', async (t) => {
  const addr = { host: '127.0.0.1', port: await freeLocalPort() };
  let made = 0;
  // ranks 1 and 2 start before rank 0 listens: they retry until it does
  const early = [1, 2].map((r) => exchangeUniqueId(r, 3, addr, () => idOf(r), 10));
  await new Promise((r) => setTimeout(r, 300));
  const zero = exchangeUniqueId(0, 3, addr, () => (made++, idOf(7)), 10);
  const ids = await Promise.all([zero, ...early]);
  t.equal(made, 1, 'only rank 0 makes the id');
  for (const id of ids) t.same([...id], [...idOf(7)]);
  const alone = await exchangeUniqueId(0, 1, { host: '127.0.0.1', port: 1 }, () => idOf(3), 1);
  t.same([...alone], [...idOf(3)], 'a world of one needs no socket');
});

t.test('a rank of another world size is refused; missing ranks time out', async (t) => {
  const addr = { host: '127.0.0.1', port: await freeLocalPort() };
  const zero = exchangeUniqueId(0, 2, addr, () => idOf(1), 2);
  await t.rejects(exchangeUniqueId(1, 3, addr, () => idOf(2), 2), { message: /rank 0 at 127\.0\.0\.1:\d+ refused rank 1 of 3 \(another world size, or the rank joined twice\)/ });
  await t.rejects(zero, { message: /rendezvous: only 0 of 1 ranks reached rank 0 at 127\.0\.0\.1:\d+ within 2 s/ });
  await t.rejects(exchangeUniqueId(1, 2, { host: '127.0.0.1', port: await freeLocalPort() }, () => idOf(2), 1), { message: /rank 1 could not reach rank 0 at 127\.0\.0\.1:\d+ within 1 s \(ECONNREFUSED\)/ });
});

t.test('torchrun-style environment', async (t) => {
  t.same(rankFromEnv({ RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '1', MASTER_ADDR: '10.0.0.2', MASTER_PORT: '29501' }), {
    rank: 3, worldSize: 8, localRank: 1, rendezvous: { host: '10.0.0.2', port: 29501 },
  });
  t.same(rankFromEnv({ RANK: '0', WORLD_SIZE: '2' }), { rank: 0, worldSize: 2, localRank: 0, rendezvous: { host: '127.0.0.1', port: 29500 } });
  t.throws(() => rankFromEnv({ WORLD_SIZE: '2' }), { message: /RANK is not set/ });
  t.throws(() => rankFromEnv({ RANK: '2', WORLD_SIZE: '2' }), { message: 'RANK 2 is outside WORLD_SIZE 2' });
  t.throws(() => rankFromEnv({ RANK: 'x', WORLD_SIZE: '2' }), { message: "RANK must be an integer >= 0, got 'x'" });
  t.throws(() => rankFromEnv({ RANK: '0', WORLD_SIZE: '2', MASTER_PORT: '70000' }), { message: 'MASTER_PORT 70000 is not a port number' });
});
