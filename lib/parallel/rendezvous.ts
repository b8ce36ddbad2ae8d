// Rendezvous of the ranks of one world over TCP, as torchrun's MASTER_ADDR / MASTER_PORT: rank 0
// listens and hands every other rank the world's NCCL id, so the ranks may live on different
// machines. The environment of a torchrun-style launch is read by rankFromEnv().
import { createConnection, createServer, type Socket } from 'node:net';

export interface RendezvousAddress {
  host: string;
  port: number;
}

const MAGIC = 0x4e445256; // 'NDRV'
const HELLO_BYTES = 12; // magic, rank, world size
const ID_BYTES = 128;
const REPLY_BYTES = 8 + ID_BYTES; // magic, status, id

/** Reads exactly n bytes from a socket. */
function readExactly(sock: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    const onData = (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      if (have >= n) {
        cleanup();
        resolve(Buffer.concat(parts).subarray(0, n));
      }
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`the connection closed after ${have} of ${n} bytes`));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const cleanup = () => {
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onError);
    };
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('error', onError);
  });
}

async function serve(worldSize: number, addr: RendezvousAddress, id: Uint8Array, timeoutS: number): Promise<void> {
  const served = new Set<number>();
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`rendezvous: rank 0 cannot listen on ${addr.host}:${addr.port}: ${err.message}`)));
    server.listen(addr.port, addr.host, () => resolve());
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`rendezvous: only ${served.size} of ${worldSize - 1} ranks reached rank 0 at ${addr.host}:${addr.port} within ${timeoutS} s`)),
        timeoutS * 1000,
      );
      server.on('connection', (sock) => {
        readExactly(sock, HELLO_BYTES).then(
          (hello) => {
            const rank = hello.readUInt32LE(4);
            const theirWorld = hello.readUInt32LE(8);
            const reply = Buffer.alloc(REPLY_BYTES);
            reply.writeUInt32LE(MAGIC, 0);
            const ok = hello.readUInt32LE(0) === MAGIC && theirWorld === worldSize && rank > 0 && rank < worldSize && !served.has(rank);
            reply.writeUInt32LE(ok ? 0 : 1, 4);
            if (ok) Buffer.from(id).copy(reply, 8);
            sock.end(reply);
            if (!ok) return;
            served.add(rank);
            if (served.size === worldSize - 1) {
              clearTimeout(timer);
              resolve();
            }
          },
          () => sock.destroy(),
        );
      });
    });
  } finally {
    server.close();
  }
}

async function fetchId(rank: number, worldSize: number, addr: RendezvousAddress, timeoutS: number): Promise<Uint8Array> {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    try {
      const sock = await new Promise<Socket>((resolve, reject) => {
        const s = createConnection({ host: addr.host, port: addr.port }, () => resolve(s));
        s.once('error', reject);
      });
      try {
        const hello = Buffer.alloc(HELLO_BYTES);
        hello.writeUInt32LE(MAGIC, 0);
        hello.writeUInt32LE(rank, 4);
        hello.writeUInt32LE(worldSize, 8);
        sock.write(hello);
        const reply = await readExactly(sock, REPLY_BYTES);
        if (reply.readUInt32LE(0) !== MAGIC) throw new Error(`rendezvous: ${addr.host}:${addr.port} is not a node-diffusion rank 0`);
        if (reply.readUInt32LE(4) !== 0)
          throw new Error(`rendezvous: rank 0 at ${addr.host}:${addr.port} refused rank ${rank} of ${worldSize} (another world size, or the rank joined twice)`);
        return new Uint8Array(reply.subarray(8, 8 + ID_BYTES));
      } finally {
        sock.destroy();
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const retry = code === 'ECONNREFUSED' || code === 'ECONNRESET' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND';
      if (!retry) throw err;
      if (Date.now() > deadline) throw new Error(`rendezvous: rank ${rank} could not reach rank 0 at ${addr.host}:${addr.port} within ${timeoutS} s (${code})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** A TCP port free on the loopback at the moment of asking (for rank 0's rendezvous). */
export async function freeLocalPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * The world's 128-byte id, made by rank 0 (makeId) and fetched by the others from rank 0's
 * listening socket.
 */
export async function exchangeUniqueId(
  rank: number,
  worldSize: number,
  addr: RendezvousAddress,
  makeId: () => Uint8Array,
  timeoutS: number,
): Promise<Uint8Array> {
  if (rank === 0) {
    const id = makeId();
    if (id.length !== ID_BYTES) throw new Error(`rendezvous: the id must hold ${ID_BYTES} bytes`);
    if (worldSize > 1) await serve(worldSize, addr, id, timeoutS);
    return id;
  }
  return fetchId(rank, worldSize, addr, timeoutS);
}

export interface EnvRank {
  rank: number;
  worldSize: number;
  /** rank on this machine: the CUDA device it uses */
  localRank: number;
  rendezvous: RendezvousAddress;
}

/**
 * The rank of a torchrun-style launch: RANK, WORLD_SIZE, LOCAL_RANK (default RANK), MASTER_ADDR
 * (default 127.0.0.1), MASTER_PORT (default 29500). Throws naming what is missing or wrong.
 */
export function rankFromEnv(env: NodeJS.ProcessEnv = process.env): EnvRank {
  const int = (name: string, fallback?: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') {
      if (fallback !== undefined) return fallback;
      throw new Error(`${name} is not set (a torchrun-style launch sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)`);
    }
    const v = Number(raw);
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${name} must be an integer >= 0, got '${raw}'`);
    return v;
  };
  const worldSize = int('WORLD_SIZE');
  const rank = int('RANK');
  if (worldSize < 1 || rank >= worldSize) throw new Error(`RANK ${rank} is outside WORLD_SIZE ${worldSize}`);
  const port = int('MASTER_PORT', 29500);
  if (port < 1 || port > 65535) throw new Error(`MASTER_PORT ${port} is not a port number`);
  return { rank, worldSize, localRank: int('LOCAL_RANK', rank), rendezvous: { host: env.MASTER_ADDR || '127.0.0.1', port } };
}
