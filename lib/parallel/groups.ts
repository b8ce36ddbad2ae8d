// The communicators of one rank's place in the layout (config.ts): the world, its CFG pair, its
// sequence-parallel group and, inside that, its Ulysses and ring groups.
import type { Communicator } from './communicator.js';
import { type ParallelConfig, rankPlace, type RankPlace } from './config.js';
import { SequenceParallel } from './sequence.js';

export class ParallelGroups {
  private constructor(
    readonly config: ParallelConfig,
    readonly place: RankPlace,
    readonly world: Communicator,
    /** the ranks computing the two CFG branches of the same tokens (size cfgDegree) */
    readonly cfg: Communicator,
    /** the ranks sharing one branch's tokens (size spDegree) */
    readonly sp: Communicator,
    readonly ulysses: Communicator,
    readonly ring: Communicator,
  ) {}

  /** Splits the world (collective: every rank calls it with the same config). */
  static create(world: Communicator, config: ParallelConfig): ParallelGroups {
    if (world.size !== config.worldSize)
      throw new Error(`the world has ${world.size} ranks but the parallel layout needs ${config.worldSize}`);
    const p = rankPlace(config, world.rank);
    const { ulyssesDegree: u, ringDegree: r } = config;
    const cfg = world.split(p.spRank, p.cfgRank);
    const sp = world.split(p.cfgRank, p.spRank);
    const ulysses = world.split(p.cfgRank * r + p.ringRank, p.ulyssesRank);
    const ring = world.split(p.cfgRank * u + p.ulyssesRank, p.ringRank);
    return new ParallelGroups(config, p, world, cfg, sp, ulysses, ring);
  }

  /** The sequence parallelism of this rank's group (null when the tokens are not split). */
  get sequenceParallel(): SequenceParallel | null {
    return this.config.spDegree > 1 ? new SequenceParallel(this.sp, this.ulysses, this.ring) : null;
  }

  /** Closes the sub-communicators, then the world. */
  close(): void {
    for (const c of [this.ring, this.ulysses, this.sp, this.cfg]) c.close();
    this.world.close();
  }
}
