// The parallel layout of a world of ranks, resolved and checked as the upstream server does
// (ServerArgs._adjust_parallelism / _validate_parallelism): sp = ulysses x ring, CFG-parallel doubles
// the ranks, num_gpus = sp x cfg; and the place of each rank in it (upstream's rank order
// tp-sp-pp-cfg-dp with Ulysses inside ring: rank = sp_rank + cfg_rank * sp, ulysses_rank =
// sp_rank % ulysses, ring_rank = sp_rank / ulysses).

/** The parallel flags as given (undefined: not given). */
export interface ParallelOptions {
  numGpus?: number;
  spDegree?: number;
  ulyssesDegree?: number;
  ringDegree?: number;
  enableCfgParallel?: boolean;
}

export interface ParallelConfig {
  /** ranks in all (num_gpus) */
  worldSize: number;
  /** sequence-parallel degree: ulyssesDegree x ringDegree */
  spDegree: number;
  ulyssesDegree: number;
  ringDegree: number;
  /** 2 with CFG-parallel, else 1 */
  cfgDegree: number;
}

export class ParallelConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ParallelConfigError';
  }
}

function positiveInt(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 1)) throw new ParallelConfigError(`${name} must be a positive integer, got ${v}`);
}

/** Fills the defaults of the flags and checks them; errors carry upstream's messages. */
export function resolveParallelConfig(o: ParallelOptions): ParallelConfig {
  positiveInt('num_gpus', o.numGpus);
  positiveInt('sp_degree', o.spDegree);
  positiveInt('ulysses_degree', o.ulyssesDegree);
  positiveInt('ring_degree', o.ringDegree);
  const numGpus = o.numGpus ?? 1;
  const cfgDegree = o.enableCfgParallel ? 2 : 1;
  if (o.enableCfgParallel && numGpus === 1) throw new ParallelConfigError('CFG Parallelism is enabled via `--enable-cfg-parallel`, but num_gpus == 1');
  // sp takes the GPUs CFG leaves (no data or tensor parallelism here)
  const spDegree = o.spDegree ?? (numGpus % cfgDegree === 0 ? numGpus / cfgDegree : 1);
  let { ulyssesDegree, ringDegree } = o;
  if (ulyssesDegree === undefined && ringDegree === undefined && spDegree !== 1) ulyssesDegree = spDegree;
  ulyssesDegree ??= 1;
  ringDegree ??= 1;
  if (spDegree > numGpus || numGpus % spDegree !== 0)
    throw new ParallelConfigError(`num_gpus (${numGpus}) must be >= and divisible by sp_degree (${spDegree})`);
  if (numGpus % cfgDegree !== 0)
    throw new ParallelConfigError(`num_gpus (${numGpus}) must be divisible by (dp_size * tp_size * 2) = ${cfgDegree}`);
  if (spDegree !== ringDegree * ulyssesDegree)
    throw new ParallelConfigError(
      `sp_degree (${spDegree}) must equal ring_degree * ulysses_degree (${ringDegree} * ${ulyssesDegree} = ${ringDegree * ulyssesDegree})`,
    );
  if (spDegree * cfgDegree !== numGpus)
    throw new ParallelConfigError(
      `num_gpus (${numGpus}) must equal sp_degree * cfg_degree (${spDegree} * ${cfgDegree} = ${spDegree * cfgDegree}): data parallelism is not supported`,
    );
  return { worldSize: numGpus, spDegree, ulyssesDegree, ringDegree, cfgDegree };
}

/** Checks that a model with `heads` attention heads can be split over the Ulysses degree. */
export function checkHeads(config: ParallelConfig, heads: number): void {
  if (heads % config.ulyssesDegree !== 0)
    throw new ParallelConfigError(`num_attention_heads (${heads}) must be divisible by ulysses_degree (${config.ulyssesDegree})`);
}

/** Where one rank sits in the layout. */
export interface RankPlace {
  rank: number;
  /** 0: the conditional branch, 1: the unconditional one (CFG-parallel) */
  cfgRank: number;
  /** position in the sequence-parallel group: shard spRank of the tokens */
  spRank: number;
  ulyssesRank: number;
  ringRank: number;
}

export function rankPlace(config: ParallelConfig, rank: number): RankPlace {
  if (!Number.isInteger(rank) || rank < 0 || rank >= config.worldSize)
    throw new RangeError(`rank ${rank} is outside a world of ${config.worldSize}`);
  const spRank = rank % config.spDegree;
  return {
    rank,
    cfgRank: Math.floor(rank / config.spDegree),
    spRank,
    ulyssesRank: spRank % config.ulyssesDegree,
    ringRank: Math.floor(spRank / config.ulyssesDegree),
  };
}
