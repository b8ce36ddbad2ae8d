// Child-process check run by memory.test.ts (with ND_CPU_BLOCK_CACHE_MB set or not): page faults
// taken by 20 ops that each write a new 1.5 MB tensor (too small for a huge page, so 384 pages of
// 4 KiB each when freshly mapped), after one warm-up op. Prints a JSON report.
import * as E from '../../lib/engine/index.js';

const x = E.randn([384, 1024], { seed: 1 });
E.exp(x).dispose();
const before = process.resourceUsage().minorPageFault;
let sum = 0;
for (let i = 0; i < 20; ++i) {
  sum += E.scope(() => (i % 2 ? E.exp(x) : E.add(x, 1)).slice(0, 0, 1).slice(1, 0, 1).item());
}
process.stdout.write(JSON.stringify({ faults: process.resourceUsage().minorPageFault - before, finite: Number.isFinite(sum) }));
