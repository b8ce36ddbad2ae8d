// The Communicator: collectives and point-to-point transfers of tensors between the ranks of a
// group, with MPI-style sub-communicators. The shapes and dims are handled here once; a Transport
// (shm.ts for CPU processes, nccl.ts for CUDA devices) moves the bytes of contiguous tensors.
import { type Device, empty, scope, type Shape, type Tensor, tensor } from '../engine/tensor.js';
import type { DType } from '../engine/dtype.js';

/**
 * Byte movement within one group, on contiguous tensors of the transport's device (sizes are
 * checked natively). Peers and roots are member indices. Every member calls the collectives in
 * the same order.
 */
export interface Transport {
  readonly kind: 'shm' | 'nccl';
  readonly device: Device;
  barrier(): void;
  /** recv = [members, ...send]: member i's send at block i */
  allGather(send: Tensor, recv: Tensor): void;
  /** allToAll takes blocks interleaved in runs (below), so tensors split along any dim need no layout copies */
  readonly interleavedAllToAll: boolean;
  /**
   * send and recv hold one block per member: block j of send goes to member j, block i of recv comes
   * from member i. With k runs (a tensor split along an inner dim) a block is k pieces interleaved with
   * the other blocks' (piece o of block j is piece o * members + j); 1 run: blocks one after the other.
   */
  allToAll(send: Tensor, recv: Tensor, sendRuns: number, recvRuns: number): void;
  /** recv = sum of every member's send, added in member order (the same bits on every rank) */
  allReduceSum(send: Tensor, recv: Tensor): void;
  /** t takes root's values on every member */
  broadcast(t: Tensor, root: number): void;
  send(t: Tensor, peer: number): void;
  recv(t: Tensor, peer: number): void;
  /** sends to dst and receives from src as one step (no deadlock in a ring) */
  sendRecv(send: Tensor, dst: number, recv: Tensor, src: number): void;
  /**
   * The transport of this member's new group, called by every member with the same partition of
   * the members into groups (each listed in its new order); `mine` indexes this member's group.
   */
  split(groups: number[][], mine: number): Transport;
  close(): void;
}

/** Moves dim 0 of x ([n, ...shape]) next to `dim` of shape and merges the two: the blocks concatenated along dim. */
function concatBlocks(x: Tensor, dim: number): Tensor {
  const [n, ...shape] = x.shape as [number, ...number[]];
  const out = shape.slice();
  out[dim] = (out[dim] as number) * n;
  if (dim === 0) return x.reshape(out);
  const order = [...Array.from({ length: dim }, (_, i) => i + 1), 0, ...Array.from({ length: shape.length - dim }, (_, i) => dim + 1 + i)];
  return x.permute(order).reshape(out);
}

function normDim(dim: number, ndim: number, what: string): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= ndim) throw new RangeError(`${what}: dim ${dim} is out of range for ${ndim} dims`);
  return d;
}

export class Communicator {
  /**
   * @param transport moves the bytes
   * @param rank this process's index in the group
   * @param worldRanks the world rank of each member, in group order
   */
  constructor(
    private readonly transport: Transport,
    readonly rank: number,
    readonly worldRanks: readonly number[],
  ) {}

  /** members of the group */
  get size(): number {
    return this.worldRanks.length;
  }

  get device(): Device {
    return this.transport.device;
  }

  get kind(): 'shm' | 'nccl' {
    return this.transport.kind;
  }

  private input(x: Tensor, op: string): Tensor {
    if (x.device !== this.device) throw new Error(`${op}: the tensor is on ${x.device}, the communicator on ${this.device}`);
    return x.contiguous();
  }

  private peer(p: number, op: string): number {
    if (!Number.isInteger(p) || p < 0 || p >= this.size) throw new RangeError(`${op}: rank ${p} is not in this group of ${this.size}`);
    return p;
  }

  barrier(): void {
    this.transport.barrier();
  }

  /** Every member's x (same shape and dtype everywhere) concatenated along dim, in member order. */
  allGather(x: Tensor, dim = 0): Tensor {
    const d = normDim(dim, x.ndim, 'allGather');
    const send = this.input(x, 'allGather');
    const recv = empty([this.size, ...x.shape], { dtype: x.dtype, device: this.device });
    this.transport.allGather(send, recv);
    return concatBlocks(recv, d);
  }

  /**
   * x split into `size` equal blocks along scatterDim, block j sent to member j; the blocks received
   * from members 0..size-1 concatenated along gatherDim (Ulysses' exchange of sequence and heads).
   */
  allToAll(x: Tensor, scatterDim: number, gatherDim: number): Tensor {
    const sd = normDim(scatterDim, x.ndim, 'allToAll');
    const gd = normDim(gatherDim, x.ndim, 'allToAll');
    const n = this.size;
    const len = x.size(sd);
    if (len % n !== 0) throw new RangeError(`allToAll: dim ${scatterDim} of [${x.shape}] does not split into ${n} equal blocks`);
    if (x.device !== this.device) throw new Error(`allToAll: the tensor is on ${x.device}, the communicator on ${this.device}`);
    const shape = x.shape;
    const product = (dims: number[]) => dims.reduce((a, b) => a * b, 1);
    if (this.transport.interleavedAllToAll) {
      // the blocks are read and written where they lie: no layout copies
      const out = shape.slice();
      out[sd] = len / n;
      out[gd] = (out[gd] as number) * n;
      const recv = empty(out, { dtype: x.dtype, device: this.device });
      this.transport.allToAll(x.contiguous(), recv, product(shape.slice(0, sd)), product(out.slice(0, gd)));
      return recv;
    }
    const split = [...shape.slice(0, sd), n, len / n, ...shape.slice(sd + 1)];
    const order = [sd, ...split.map((_, i) => i).filter((i) => i !== sd)];
    const send = x.reshape(split).permute(order).contiguous(); // [n, ...block]
    const recv = empty(send.shape, { dtype: x.dtype, device: this.device });
    this.transport.allToAll(send, recv, 1, 1);
    return concatBlocks(recv, gd);
  }

  /** The elementwise sum of every member's x. */
  allReduce(x: Tensor): Tensor {
    const send = this.input(x, 'allReduce');
    const recv = empty(x.shape, { dtype: x.dtype, device: this.device });
    this.transport.allReduceSum(send, recv);
    return recv;
  }

  /** root's x on every member (the others pass a tensor of the same shape and dtype; its values are ignored). */
  broadcast(x: Tensor, root = 0): Tensor {
    this.peer(root, 'broadcast');
    const t = this.rank === root ? this.input(x, 'broadcast').clone() : empty(x.shape, { dtype: x.dtype, device: this.device });
    this.transport.broadcast(t, root);
    return t;
  }

  /** A JSON value of root's on every member (control data; tensors travel with broadcast()). */
  broadcastValue<T>(value: T, root = 0): T {
    this.peer(root, 'broadcastValue');
    const text = scope(() => {
      const mine = this.rank === root ? new TextEncoder().encode(JSON.stringify(value) ?? 'null') : new Uint8Array(0);
      const n = this.broadcast(tensor([mine.length], [1], { dtype: 'int32' }).toDevice(this.device), root).item();
      const payload = this.rank === root ? tensor(mine, [n], { dtype: 'uint8' }).toDevice(this.device) : empty([n], { dtype: 'uint8', device: this.device });
      return new TextDecoder().decode(this.broadcast(payload, root).toDevice('cpu').data() as Uint8Array);
    });
    return JSON.parse(text) as T;
  }

  send(x: Tensor, peer: number): void {
    this.transport.send(this.input(x, 'send'), this.peer(peer, 'send'));
  }

  /** Receives a tensor of the given shape and dtype from peer. */
  recv(shape: Shape, dtype: DType, peer: number): Tensor {
    const t = empty(shape, { dtype, device: this.device });
    this.transport.recv(t, this.peer(peer, 'recv'));
    return t;
  }

  /** Sends x to dst and returns what src sent (x's shape and dtype) in one step. */
  sendRecv(x: Tensor, dst: number, src: number): Tensor {
    const send = this.input(x, 'sendRecv');
    const recv = empty(x.shape, { dtype: x.dtype, device: this.device });
    this.transport.sendRecv(send, this.peer(dst, 'sendRecv'), recv, this.peer(src, 'sendRecv'));
    return recv;
  }

  /**
   * A sub-communicator (collective over this group): members with the same color form a group,
   * ordered by key, then by their rank here.
   */
  split(color: number, key = this.rank): Communicator {
    if (!Number.isSafeInteger(color) || color < 0) throw new RangeError(`split: color must be an integer >= 0, got ${color}`);
    if (!Number.isSafeInteger(key)) throw new RangeError(`split: key must be an integer, got ${key}`);
    const values = scope(() => this.allGather(tensor([color, key], [2], { dtype: 'int64' }).toDevice(this.device), 0).toDevice('cpu').toArray());
    const members = Array.from({ length: this.size }, (_, i) => ({ i, color: values[2 * i] as number, key: values[2 * i + 1] as number }));
    const colors = [...new Set(members.map((m) => m.color))].sort((a, b) => a - b);
    const groups = colors.map((c) =>
      members
        .filter((m) => m.color === c)
        .sort((a, b) => a.key - b.key || a.i - b.i)
        .map((m) => m.i),
    );
    const g = colors.indexOf(color);
    const group = groups[g] as number[];
    return new Communicator(this.transport.split(groups, g), group.indexOf(this.rank), group.map((i) => this.worldRanks[i] as number));
  }

  /** Releases the transport (sub-communicators first, then the world). */
  close(): void {
    this.transport.close();
  }
}
