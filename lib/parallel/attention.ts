// Attention over a sequence split between ranks. Ulysses: an all-to-all turns sequence shards into
// head shards (every rank sees all tokens for some heads), attention runs locally, and a second
// all-to-all turns the result back. Ring: key/value blocks travel around the ring and each rank
// merges the partial results of its queries exactly through their log-sum-exp. Combined (USP):
// Ulysses inside each ring member, the ring across Ulysses groups.
import { add, clamp, div, exp, log, maximum, mul, stack, sub } from '../engine/ops/basic.js';
import { attention, attentionWithLse } from '../engine/ops/linalg.js';
import { full, scope, type Tensor } from '../engine/tensor.js';
import type { Communicator } from './communicator.js';

/** Attention of some queries over a subset of the keys: out [B, H, Lq, Dv] float32 and lse [B, H, Lq] float32. */
export interface AttentionPartial {
  out: Tensor;
  lse: Tensor;
}

/**
 * The exact combination of two partials over disjoint key sets: the softmax weights of each are
 * rescaled by exp(lse - lse_total). A partial without any key has lse = -inf and weighs nothing.
 */
export function mergeAttention(a: AttentionPartial, b: AttentionPartial): AttentionPartial {
  return scope(() => {
    // a finite floor keeps two empty partials at weight 0 instead of NaN
    const m = clamp(maximum(a.lse, b.lse), -1e30, Number.MAX_VALUE);
    const wa = exp(sub(a.lse, m));
    const wb = exp(sub(b.lse, m));
    const total = add(wa, wb);
    const out = div(add(mul(a.out, wa.unsqueeze(-1)), mul(b.out, wb.unsqueeze(-1))), clamp(total, 1e-30, Number.MAX_VALUE).unsqueeze(-1));
    return { out, lse: add(m, log(total)) };
  });
}

export interface RingAttentionOptions {
  /** softmax scale (default 1/sqrt(head_dim)) */
  scale?: number;
  /** valid (unpadded) keys of the block that ring member `owner` started with (default: all) */
  validKeys?: (owner: number) => number;
}

/**
 * Attention of this member's queries over the keys of every ring member. q [B, Lq, H, D], k and v
 * [B, Lk, H, D] (this member's block; every member's block has the same length). Each of the
 * size-1 steps passes the key/value block on to the next member; a block without valid keys is
 * passed on without computing. Returns [B, Lq, H, Dv] in q's dtype.
 */
export function ringAttention(q: Tensor, k: Tensor, v: Tensor, ring: Communicator, opts: RingAttentionOptions = {}): Tensor {
  const n = ring.size;
  const me = ring.rank;
  const [b, , , d] = q.shape as [number, number, number, number];
  const lk = k.size(1);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  let kv = stack([k, v], 0).contiguous(); // [2, B, Lk, H, D], one message per step
  let acc: AttentionPartial | null = null;
  try {
    for (let step = 0; step < n; ++step) {
      const owner = (me - step + n) % n;
      const valid = Math.max(0, Math.min(lk, opts.validKeys ? opts.validKeys(owner) : lk));
      if (valid > 0) {
        const block = kv;
        const prev: AttentionPartial | null = acc;
        acc = scope(() => {
          const kvLens = valid < lk ? full([b], valid, { dtype: 'int32', device: q.device }) : null;
          const part = attentionWithLse(q.permute(0, 2, 1, 3), block.select(0, 0).permute(0, 2, 1, 3), block.select(0, 1).permute(0, 2, 1, 3), { scale, kvLens });
          const p = { out: part.out.to('float32'), lse: part.lse };
          return prev ? mergeAttention(prev, p) : p;
        });
        if (prev) {
          prev.out.dispose();
          prev.lse.dispose();
        }
      }
      if (step + 1 < n) {
        const next = ring.sendRecv(kv, (me + 1) % n, (me - 1 + n) % n);
        kv.dispose();
        kv = next;
      }
    }
  } finally {
    kv.dispose();
  }
  if (!acc) throw new Error('ringAttention: no member holds a valid key');
  const result = acc.out.to(q.dtype).transpose(1, 2);
  acc.out.dispose();
  acc.lse.dispose();
  return result;
}

/** Sequence shards [B, Ls, H, D] of every member -> all tokens of H/size heads [B, size * Ls, H/size, D]. */
export function ulyssesToHeads(x: Tensor, ulysses: Communicator): Tensor {
  return ulysses.allToAll(x, 2, 1);
}

/** The inverse: [B, size * Ls, H/size, D] head shards -> this member's tokens with all heads [B, Ls, H, D]. */
export function ulyssesToSequence(x: Tensor, ulysses: Communicator): Tensor {
  return ulysses.allToAll(x, 1, 2);
}

export interface SequenceAttentionOptions {
  scale?: number;
  /** real tokens of the whole sequence; the positions after them are padding and masked out */
  validLength: number;
}

/**
 * Self-attention over a sequence split into equal shards over ulysses.size x ring.size ranks (shard
 * i on the rank with Ulysses index i % U and ring index i / U). q, k, v [B, Ls, H, D] are this
 * rank's shard; returns the attention output of its queries [B, Ls, H, Dv].
 */
export function sequenceParallelAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  groups: { ulysses: Communicator; ring: Communicator },
  opts: SequenceAttentionOptions,
): Tensor {
  const { ulysses, ring } = groups;
  const u = ulysses.size;
  const heads = q.size(2);
  if (heads % u !== 0) throw new RangeError(`sequence-parallel attention: ${heads} heads do not split over ulysses_degree ${u}`);
  return scope(() => {
    let [qh, kh, vh] = [q, k, v];
    if (u > 1) {
      // one exchange for the three projections
      const all = ulysses.allToAll(stack([q, k, v], 0), 3, 2); // [3, B, U * Ls, H / U, D]
      [qh, kh, vh] = [all.select(0, 0), all.select(0, 1), all.select(0, 2)];
    }
    const block = qh.size(1); // the tokens of one Ulysses group: U consecutive shards
    const validOf = (owner: number) => Math.max(0, Math.min(block, opts.validLength - owner * block));
    let out: Tensor;
    if (ring.size > 1) {
      out = ringAttention(qh, kh, vh, ring, { scale: opts.scale, validKeys: validOf });
    } else {
      const valid = validOf(0);
      const kvLens = valid < block ? full([q.size(0)], valid, { dtype: 'int32', device: q.device }) : null;
      out = attention(qh.permute(0, 2, 1, 3), kh.permute(0, 2, 1, 3), vh.permute(0, 2, 1, 3), { scale: opts.scale, kvLens }).transpose(1, 2);
    }
    return u > 1 ? ulyssesToSequence(out, ulysses) : out;
  });
}
