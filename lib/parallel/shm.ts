// The CPU transport: ranks are processes of one machine sharing a memory-mapped file (in /dev/shm),
// through csrc/parallel/shm_comm.cpp. One native communicator per process; groups are ids in it.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { native, type NativeTensor } from '../engine/native.js';
import { empty, scope, tensor, type Tensor } from '../engine/tensor.js';
import { Communicator, type Transport } from './communicator.js';

declare module '../engine/native.js' {
  interface NativeAddon {
    shmOpen(path: string, rank: number, worldSize: number, slotBytes: number, timeoutSeconds: number): number;
    shmClose(comm: number): void;
    shmAllocGroupIds(comm: number, count: number): number;
    shmDefineGroup(comm: number, group: number, members: number[]): void;
    shmBarrier(comm: number, group: number): void;
    shmAllGather(comm: number, group: number, send: NativeTensor, recv: NativeTensor): void;
    shmAllToAll(comm: number, group: number, send: NativeTensor, recv: NativeTensor, sendRuns: number, recvRuns: number): void;
    shmAllReduce(comm: number, group: number, send: NativeTensor, recv: NativeTensor): void;
    shmBroadcast(comm: number, group: number, t: NativeTensor, root: number): void;
    shmSend(comm: number, t: NativeTensor, dst: number): void;
    shmRecv(comm: number, t: NativeTensor, src: number): void;
    shmSendRecv(comm: number, send: NativeTensor, dst: number, recv: NativeTensor, src: number): void;
  }
}

/** Default bytes each rank can expose at once (larger transfers go through in pieces of this size). */
export const DEFAULT_SHM_SLOT_BYTES = 32 << 20;
/** Default seconds a rank waits for the others (upstream's --dist-timeout default). */
export const DEFAULT_COMM_TIMEOUT_S = 3600;

/** A fresh path for the shared file of a new group of CPU ranks (/dev/shm when present). */
export function newShmPath(): string {
  const dir = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  return join(dir, `node-diffusion-${process.pid}-${randomBytes(6).toString('hex')}`);
}

class ShmTransport implements Transport {
  readonly kind = 'shm';
  readonly device = 'cpu';
  readonly interleavedAllToAll = true;

  /**
   * @param comm the process's native communicator (shared by all its groups)
   * @param group the group id (0: the world)
   * @param members world ranks of the members, in group order
   * @param index this rank's position among them
   */
  constructor(
    private readonly comm: { id: number; rank: number; open: boolean },
    private readonly group: number,
    private readonly members: readonly number[],
    private readonly index: number,
  ) {}

  private get id(): number {
    if (!this.comm.open) throw new Error('the shared-memory communicator is closed');
    return this.comm.id;
  }

  barrier(): void {
    native.shmBarrier(this.id, this.group);
  }
  allGather(send: Tensor, recv: Tensor): void {
    native.shmAllGather(this.id, this.group, send.handle, recv.handle);
  }
  allToAll(send: Tensor, recv: Tensor, sendRuns: number, recvRuns: number): void {
    native.shmAllToAll(this.id, this.group, send.handle, recv.handle, sendRuns, recvRuns);
  }
  allReduceSum(send: Tensor, recv: Tensor): void {
    native.shmAllReduce(this.id, this.group, send.handle, recv.handle);
  }
  broadcast(t: Tensor, root: number): void {
    native.shmBroadcast(this.id, this.group, t.handle, root);
  }
  send(t: Tensor, peer: number): void {
    native.shmSend(this.id, t.handle, this.members[peer] as number);
  }
  recv(t: Tensor, peer: number): void {
    native.shmRecv(this.id, t.handle, this.members[peer] as number);
  }
  sendRecv(send: Tensor, dst: number, recv: Tensor, src: number): void {
    native.shmSendRecv(this.id, send.handle, this.members[dst] as number, recv.handle, this.members[src] as number);
  }

  split(groups: number[][], mine: number): Transport {
    // member 0 reserves one group id per new group and tells the others
    const base = scope(() => {
      const t = this.index === 0 ? tensor([native.shmAllocGroupIds(this.id, groups.length)], [1], { dtype: 'int32' }) : empty([1], { dtype: 'int32' });
      native.shmBroadcast(this.id, this.group, t.handle, 0);
      return t.item();
    });
    const members = (groups[mine] as number[]).map((i) => this.members[i] as number);
    native.shmDefineGroup(this.id, base + mine, members);
    return new ShmTransport(this.comm, base + mine, members, members.indexOf(this.comm.rank));
  }

  close(): void {
    if (this.group === 0 && this.comm.open) {
      native.shmClose(this.comm.id);
      this.comm.open = false;
    }
  }
}

export interface ShmOptions {
  /** the shared file (the same for every rank; see newShmPath) */
  path: string;
  rank: number;
  worldSize: number;
  /** bytes of each rank's exchange slot (a multiple of 4096); default 32 MiB or ND_SHM_SLOT_MB */
  slotBytes?: number;
  /** how long a rank waits for the others before failing; default 3600 s or ND_COMM_TIMEOUT */
  timeoutSeconds?: number;
}

/**
 * Joins the group of CPU ranks sharing `path` (blocks until every rank has joined) and returns the
 * world communicator.
 */
export function openShmCommunicator(opts: ShmOptions): Communicator {
  const slotMb = Number(process.env.ND_SHM_SLOT_MB);
  const slotBytes = opts.slotBytes ?? (slotMb > 0 ? Math.round(slotMb * 256) * 4096 : DEFAULT_SHM_SLOT_BYTES);
  const envTimeout = Number(process.env.ND_COMM_TIMEOUT);
  const timeout = opts.timeoutSeconds ?? (envTimeout > 0 ? envTimeout : DEFAULT_COMM_TIMEOUT_S);
  const id = native.shmOpen(opts.path, opts.rank, opts.worldSize, slotBytes, timeout);
  const members = Array.from({ length: opts.worldSize }, (_, i) => i);
  return new Communicator(new ShmTransport({ id, rank: opts.rank, open: true }, 0, members, opts.rank), opts.rank, members);
}
