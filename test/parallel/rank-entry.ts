// One rank of a test pool (ranks.ts): joins the shared-memory world, then runs the scenarios the
// parent names, one at a time, until the parent disconnects.
import { pathToFileURL } from 'node:url';

import type { Communicator } from '../../lib/parallel/communicator.js';
import { openShmCommunicator } from '../../lib/parallel/shm.js';

type Scenario = (world: Communicator, args: unknown) => unknown | Promise<unknown>;

const rank = Number(process.env.ND_TEST_RANK);
const worldSize = Number(process.env.ND_TEST_WORLD);
const world = openShmCommunicator({ path: process.env.ND_TEST_SHM as string, rank, worldSize, timeoutSeconds: 120 });
const scenarios = (await import(pathToFileURL(process.argv[2] as string).href)) as Record<string, Scenario>;

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
