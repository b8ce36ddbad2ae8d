// Timing that also reports how much CPU the process got: on a shared machine the wall time of
// a multithreaded kernel says little by itself, so rows note the cores kept busy and the rate
// per busy core (the kernel's efficiency independent of the load from other processes).
import { timeIt } from './lib.js';

export interface CpuTiming {
  /** median wall time of one run, ms */
  ms: number;
  /** process CPU time / wall time over all timed runs */
  busyCores: number;
}

export async function timeWithCpu(fn: () => unknown, reps: number, warmup: number): Promise<CpuTiming> {
  for (let i = 0; i < warmup; ++i) await fn();
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const ms = await timeIt(fn, reps, 0);
  const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
  const cpu = process.cpuUsage(cpu0);
  return { ms, busyCores: (cpu.user + cpu.system) / wallUs };
}

/** The note for a row: cores kept busy and the share of the one-core peak per busy core. */
export function cpuNote(gflops: number, t: CpuTiming, peakOne: number): string {
  return `${t.busyCores.toFixed(2)} cores busy, ${((100 * gflops) / (t.busyCores * peakOne)).toFixed(0)}% of peak per busy core`;
}
