// Keeping the ranks of a job in step: only rank 0 hears about cancellation (the server talks to
// it), so at each step boundary every rank takes rank 0's decision, and all stop at the same point
// instead of some waiting forever in the next collective.
import { scope, tensor } from '../engine/tensor.js';
import type { Communicator } from './communicator.js';

/** The error every rank throws when rank 0 cancelled the job. */
export class CancelledTogether extends Error {
  constructor() {
    super('the job was cancelled');
    this.name = 'AbortError';
  }
}

/** Throws CancelledTogether on every rank when rank 0's signal is aborted (collective over world). */
export function stopTogether(world: Communicator, signal: AbortSignal | undefined): void {
  const stop = scope(() => world.broadcast(tensor([signal?.aborted ? 1 : 0], [1], { dtype: 'int32' }).toDevice(world.device), 0).toDevice('cpu').item());
  if (stop) throw new CancelledTogether();
}
