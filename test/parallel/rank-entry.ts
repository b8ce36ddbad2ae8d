// One rank of a test pool (ranks.ts): joins the world (shared memory, or NCCL on cuda:<rank>), then
// runs the scenarios the parent names, one at a time, until the parent disconnects.
import { pathToFileURL } from 'node:url';

import type { Communicator } from '../../lib/parallel/communicator.js';
import { openNcclCommunicator } from '../../lib/parallel/nccl.js';
import { openShmCommunicator } from '../../lib/parallel/shm.js';

type Scenario = (world: Communicator, args: unknown) => unknown | Promise<unknown>;

const rank = Number(process.env.ND_TEST_RANK);
const worldSize = Number(process.env.ND_TEST_WORLD);
const world =
  process.env.ND_TEST_TRANSPORT === 'nccl'
    ? await openNcclCommunicator({ rank, worldSize, device: rank, rendezvous: { host: '127.0.0.1', port: Number(process.env.ND_TEST_PORT) }, timeoutSeconds: 120 })
    : openShmCommunicator({ path: process.env.ND_TEST_SHM as string, rank, worldSize, timeoutSeconds: 120 });
const scenarios: Record<string, Scenario> = {};
for (const file of process.argv.slice(2)) Object.assign(scenarios, await import(pathToFileURL(file).href));

process.on('message', (m: { id: number; name: string; args: unknown }) => {
  const fn = scenarios[m.name];
  Promise.resolve()
    .then(() => {
      if (typeof fn !== 'function') throw new Error(`no scenario '${m.name}'`);
      return fn(world, m.args);
    })
    .then(
      (value) => process.send?.({ type: 'result', id: m.id, value }),
      (err: unknown) => process.send?.({ type: 'error', id: m.id, message: err instanceof Error ? err.message : String(err) }),
    );
});
process.on('disconnect', () => {
  world.close();
  process.exit(0);
});
process.send?.({ type: 'ready' });
