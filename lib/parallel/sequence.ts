// Token sharding for sequence parallelism, as upstream's sp_shard_utils: a sequence of L tokens is
// cut into equal shards of ceil(L / sp) tokens, the last one padded at its end; each rank keeps its
// shard (and the matching rows of per-token tables such as RoPE), attention masks the padding out,
// and the per-token results are gathered at the end with the padding cut off.
import { concat } from '../engine/ops/basic.js';
import { type Tensor, zeros } from '../engine/tensor.js';
import { sequenceParallelAttention } from './attention.js';
import type { Communicator } from './communicator.js';

export class SequenceParallel {
  constructor(
    /** all ranks sharing the sequence, shard i on member i */
    readonly sp: Communicator,
    readonly ulysses: Communicator,
    readonly ring: Communicator,
  ) {
    if (sp.size !== ulysses.size * ring.size)
      throw new Error(`sequence parallelism: ${sp.size} ranks are not ulysses ${ulysses.size} x ring ${ring.size}`);
  }

  get degree(): number {
    return this.sp.size;
  }

  /** The split of a sequence of `length` tokens and this rank's part of it. */
  shard(length: number): SequenceShard {
    return new SequenceShard(this, length);
  }
}

export class SequenceShard {
  /** tokens per rank */
  readonly localLength: number;
  /** localLength x degree: the sequence with its padding */
  readonly paddedLength: number;
  /** this rank's shard index */
  readonly index: number;

  constructor(
    private readonly parallel: SequenceParallel,
    /** real tokens */
    readonly length: number,
  ) {
    if (!Number.isInteger(length) || length < 1) throw new RangeError(`sequence parallelism: a sequence needs >= 1 token, got ${length}`);
    this.localLength = Math.ceil(length / parallel.degree);
    this.paddedLength = this.localLength * parallel.degree;
    this.index = parallel.sp.rank;
  }

  /** This rank's tokens of x along dim (zeros past the real tokens), contiguous. */
  take(x: Tensor, dim: number): Tensor {
    if (x.size(dim) !== this.length) throw new RangeError(`sequence shard: dim ${dim} of [${x.shape}] is not the ${this.length}-token sequence`);
    const start = this.index * this.localLength;
    const end = start + this.localLength;
    const real = Math.max(0, Math.min(end, this.length) - start);
    if (real === this.localLength) return x.slice(dim, start, end).contiguous();
    const padShape = x.shape.slice();
    padShape[dim] = this.localLength - real;
    const pad = zeros(padShape, { dtype: x.dtype, device: x.device });
    return real === 0 ? pad : concat([x.slice(dim, start, start + real), pad], dim);
  }

  /** Every rank's shard of x along dim, concatenated, without the padding. */
  gather(x: Tensor, dim: number): Tensor {
    const all = this.parallel.sp.allGather(x, dim);
    return this.paddedLength === this.length ? all : all.slice(dim, 0, this.length);
  }

  /** Self-attention of this rank's queries over all real tokens; q, k, v [B, localLength, H, D]. */
  attention(q: Tensor, k: Tensor, v: Tensor, scale?: number): Tensor {
    return sequenceParallelAttention(q, k, v, this.parallel, { validLength: this.length, ...(scale === undefined ? {} : { scale }) });
  }
}
