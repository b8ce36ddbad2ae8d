// Multi-rank execution: communicators (shared memory between CPU processes, NCCL between GPUs),
// the parallel layout, and the sequence-parallel and CFG-parallel algorithms.
export { Communicator, type Transport } from './communicator.js';
export { DEFAULT_COMM_TIMEOUT_S, DEFAULT_SHM_SLOT_BYTES, newShmPath, openShmCommunicator, type ShmOptions } from './shm.js';
export { ncclInfo, type NcclInfo, type NcclOptions, ncclVersionString, openNcclCommunicator } from './nccl.js';
export { exchangeUniqueId, rankFromEnv, type EnvRank, type RendezvousAddress } from './rendezvous.js';
export {
  checkHeads, type ParallelConfig, ParallelConfigError, type ParallelOptions, rankPlace, type RankPlace, resolveParallelConfig,
} from './config.js';
export { ParallelGroups } from './groups.js';
export {
  type AttentionPartial, mergeAttention, ringAttention, type RingAttentionOptions, sequenceParallelAttention,
  type SequenceAttentionOptions, ulyssesToHeads, ulyssesToSequence,
} from './attention.js';
export { SequenceParallel, SequenceShard } from './sequence.js';
export { combineGuidance } from './cfg.js';
export { CancelledTogether, stopTogether } from './lockstep.js';
