// Side-by-side numbers from PyTorch (CPU) where a python3 with torch is installed: a case hands
// over a Python snippet that fills `rows` with {name, ms, gflops}; missing torch is reported once.
import { execFileSync, spawnSync } from 'node:child_process';

import type { BenchRow } from './lib.js';

let available: boolean | undefined;

/** Whether `python3 -c "import torch"` works (checked once). */
export function torchAvailable(): boolean {
  if (available === undefined) {
    const r = spawnSync('python3', ['-c', 'import torch'], { stdio: 'ignore' });
    available = r.status === 0;
    if (!available) console.log('torch: python3 with torch not found, skipping the PyTorch comparison');
  }
  return available;
}

const PRELUDE = `
import json, sys, time, statistics
import torch
torch.set_num_threads(int(sys.argv[1]))
rows = []
def bench(fn, reps, warmup=1):
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)
`;

/**
 * Runs `body` (Python using bench(fn, reps) and appending {"name", "ms", "gflops"} dicts to rows)
 * with torch on `threads` threads; returns the rows in `group`, ratios against `ceiling` GFLOP/s.
 * A row may give "gbps" instead of "gflops" (ratio against `ceiling` GB/s), and its own "ratio".
 */
export function torchRows(group: string, body: string, threads: number, ceiling: number, vs: string): BenchRow[] {
  if (!torchAvailable()) return [];
  const script = `${PRELUDE}\n${body}\nprint(json.dumps(rows))\n`;
  try {
    const out = execFileSync('python3', ['-c', script, String(threads)], { encoding: 'utf8', maxBuffer: 1 << 20 });
    type Row = { name: string; ms: number; gflops?: number; gbps?: number; ratio?: number };
    const rows = JSON.parse(out.trim().split('\n').pop() as string) as Row[];
    return rows.map((r) => ({
      group,
      name: `torch ${torchVersion()}: ${r.name}`,
      ms: r.ms,
      ...(r.gbps === undefined ? { gflops: r.gflops } : { gbps: r.gbps }),
      ratio: r.ratio ?? ((r.gbps ?? r.gflops ?? 0) / ceiling),
      vs,
    }));
  } catch (err) {
    console.log(`torch: the comparison failed (${(err as Error).message.split('\n')[0]})`);
    return [];
  }
}

let version: string | undefined;
function torchVersion(): string {
  if (version === undefined) {
    try {
      version = execFileSync('python3', ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).trim();
    } catch {
      version = '?';
    }
  }
  return version;
}
