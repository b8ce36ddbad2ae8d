// The CUDA transport: NCCL (libnccl.so.2, loaded at run time by csrc/parallel/nccl_comm.cpp), one
// NCCL communicator per group, work queued on the device's compute stream. The world's unique id
// travels from rank 0 to the others over TCP (rendezvous.ts), as torchrun's store does.
import { native, type NativeTensor } from '../engine/native.js';
import { type Device, empty, scope, type Tensor, tensor } from '../engine/tensor.js';
import { Communicator, type Transport } from './communicator.js';
import { exchangeUniqueId, type RendezvousAddress } from './rendezvous.js';

declare module '../engine/native.js' {
  interface NativeAddon {
    ncclInfo(): NcclInfo;
    ncclUniqueId(): Uint8Array;
    ncclOpen(id: Uint8Array, rank: number, worldSize: number, device: number): number;
    ncclClose(comm: number, abort: boolean): void;
    ncclBarrier(comm: number): void;
    ncclAllGather(comm: number, send: NativeTensor, recv: NativeTensor): void;
    ncclAllToAll(comm: number, send: NativeTensor, recv: NativeTensor): void;
    ncclAllReduce(comm: number, send: NativeTensor, recv: NativeTensor): void;
    ncclBroadcast(comm: number, t: NativeTensor, root: number): void;
    ncclSend(comm: number, t: NativeTensor, peer: number): void;
    ncclRecv(comm: number, t: NativeTensor, peer: number): void;
    ncclSendRecv(comm: number, send: NativeTensor, dst: number, recv: NativeTensor, src: number): void;
  }
}

export interface NcclInfo {
  available: boolean;
  /** the library found, null when none */
  path: string | null;
  /** e.g. 22105 for NCCL 2.21.5 */
  version: number;
  /** why NCCL cannot be used ('' when it can) */
  reason: string;
}

/** Whether NCCL can be loaded here (never throws). */
export function ncclInfo(): NcclInfo {
  return native.ncclInfo();
}

/** "2.21.5" from 22105. */
export function ncclVersionString(v: number): string {
  return `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`;
}

const ID_BYTES = 128;

class NcclTransport implements Transport {
  readonly kind = 'nccl';
  /** NCCL sends contiguous buffers: the Communicator lays the blocks out first */
  readonly interleavedAllToAll = false;
  private open = true;

  constructor(
    private readonly comm: number,
    readonly device: Device,
    private readonly cudaIndex: number,
    private readonly index: number,
  ) {}

  private get id(): number {
    if (!this.open) throw new Error('the NCCL communicator is closed');
    return this.comm;
  }

  barrier(): void {
    native.ncclBarrier(this.id);
  }
  allGather(send: Tensor, recv: Tensor): void {
    native.ncclAllGather(this.id, send.handle, recv.handle);
  }
  allToAll(send: Tensor, recv: Tensor, sendRuns: number, recvRuns: number): void {
    if (sendRuns !== 1 || recvRuns !== 1) throw new Error('the NCCL all-to-all takes contiguous blocks only');
    native.ncclAllToAll(this.id, send.handle, recv.handle);
  }
  allReduceSum(send: Tensor, recv: Tensor): void {
    native.ncclAllReduce(this.id, send.handle, recv.handle);
  }
  broadcast(t: Tensor, root: number): void {
    native.ncclBroadcast(this.id, t.handle, root);
  }
  send(t: Tensor, peer: number): void {
    native.ncclSend(this.id, t.handle, peer);
  }
  recv(t: Tensor, peer: number): void {
    native.ncclRecv(this.id, t.handle, peer);
  }
  sendRecv(send: Tensor, dst: number, recv: Tensor, src: number): void {
    native.ncclSendRecv(this.id, send.handle, dst, recv.handle, src);
  }

  /** The first member of each new group makes its NCCL id; one all-gather hands them out. */
  split(groups: number[][], mine: number): Transport {
    const group = groups[mine] as number[];
    const leader = group[0] as number;
    const ids = scope(() => {
      const own = this.index === leader ? native.ncclUniqueId() : new Uint8Array(ID_BYTES);
      const send = tensor(own, [ID_BYTES], { dtype: 'uint8' }).toDevice(this.device);
      const recv = empty([groups.flat().length * ID_BYTES], { dtype: 'uint8', device: this.device });
      native.ncclAllGather(this.id, send.handle, recv.handle);
      return recv.toDevice('cpu').data() as Uint8Array;
    });
    const id = ids.slice(leader * ID_BYTES, (leader + 1) * ID_BYTES);
    const myIndex = group.indexOf(this.index);
    const comm = native.ncclOpen(id, myIndex, group.length, this.cudaIndex);
    return new NcclTransport(comm, this.device, this.cudaIndex, myIndex);
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    native.ncclClose(this.comm, false);
  }
}

export interface NcclOptions {
  rank: number;
  worldSize: number;
  /** this rank's CUDA device index */
  device: number;
  /** where rank 0 serves the NCCL id (MASTER_ADDR / MASTER_PORT) */
  rendezvous: RendezvousAddress;
  /** seconds to wait for the other ranks at the rendezvous (default 600) */
  timeoutSeconds?: number;
}

/** Joins the NCCL world (rank 0 publishes the id over TCP, everyone joins) and returns its communicator. */
export async function openNcclCommunicator(opts: NcclOptions): Promise<Communicator> {
  const info = ncclInfo();
  if (!info.available) throw new Error(`NCCL is not available: ${info.reason}`);
  const id = await exchangeUniqueId(opts.rank, opts.worldSize, opts.rendezvous, () => native.ncclUniqueId(), opts.timeoutSeconds ?? 600);
  const comm = native.ncclOpen(id, opts.rank, opts.worldSize, opts.device);
  const device: Device = `cuda:${opts.device}`;
  const members = Array.from({ length: opts.worldSize }, (_, i) => i);
  return new Communicator(new NcclTransport(comm, device, opts.device, opts.rank), opts.rank, members);
}
