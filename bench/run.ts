// `npm run bench [-- filter...]`: measures the machine's single-precision FMA peak (all cores
// and one core), runs every bench/cases/*.ts module whose file name contains a filter (all by
// default; gemm first, since other cases compare against its rate), prints a table and writes
// bench/results/<cpu>-<date>[-<filters>][-quick].json and .md, and a copy of the table as
// bench/results/latest.md (not committed).
// BENCH_QUICK=1: fewer repetitions and smaller shapes.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import * as E from '../lib/engine/index.js';
import { native } from '../lib/engine/native.js';
import type { BenchCase, BenchContext, BenchRow } from './lib.js';

declare module '../lib/engine/native.js' {
  interface NativeAddon {
    /**
     * single-precision FMA rate of `threads` threads over about `seconds`: over the wall time, and
     * per CPU-second of one thread (one core's rate while it runs, whatever else loads the machine)
     */
    benchFmaPeak(threads: number, seconds: number): { wallGflops: number; coreGflops: number };
    /** the GEMM micro-kernel in use: 'avx512', 'avx2' or 'generic' */
    gemmKernelName(): string;
  }
}

const here = dirname(fileURLToPath(import.meta.url));

function fmt(v: number | undefined, digits: number): string {
  return v === undefined ? '' : v.toFixed(digits);
}

function table(rows: BenchRow[]): string[][] {
  return rows.map((r) => [
    r.group, r.name, r.ms ? fmt(r.ms, 1) : '', fmt(r.gflops, 1), fmt(r.gbps, 1),
    r.ratio === undefined ? '' : `${(100 * r.ratio).toFixed(1)}%`, r.vs ?? '', r.note ?? '',
  ]);
}

const HEADER = ['group', 'case', 'ms', 'GFLOP/s', 'GB/s', 'ratio', 'vs', 'note'];

function printTable(rows: BenchRow[]): void {
  const body = table(rows);
  const widths = HEADER.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd();
  console.log(line(HEADER));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of body) console.log(line(r));
}

function markdown(rows: BenchRow[]): string {
  const lines = [`| ${HEADER.join(' | ')} |`, `|${HEADER.map(() => '---').join('|')}|`];
  for (const r of table(rows)) lines.push(`| ${r.join(' | ')} |`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const quick = process.env.BENCH_QUICK === '1';
  const threads = E.numThreads();
  const cpu = cpus()[0]?.model.trim() ?? 'unknown cpu';
  const loadStart = loadavg();
  console.log(`cpu: ${cpu}, ${cpus().length} logical cores, ${threads} engine threads, kernel ${native.gemmKernelName()}`);
  console.log(`load average at start: ${loadStart.map((x) => x.toFixed(2)).join(' ')}${quick ? ' (quick mode)' : ''}`);

  // best of two runs each; the all-core peak is threads x the per-CPU-second rate of the
  // all-thread run (what the cores deliver when the machine is ours), the wall rate is shown too
  const runs = [native.benchFmaPeak(threads, 0.5), native.benchFmaPeak(threads, 0.5)];
  const ones = [native.benchFmaPeak(1, 0.5), native.benchFmaPeak(1, 0.5)];
  const peakWall = Math.max(...runs.map((r) => r.wallGflops));
  const peakAll = threads * Math.max(...runs.map((r) => r.coreGflops));
  const peakOne = Math.max(...ones.map((r) => r.coreGflops));
  console.log(
    `fma peak: ${peakAll.toFixed(1)} GFLOP/s on ${threads} cores (${peakWall.toFixed(1)} measured in wall time), ` +
      `${peakOne.toFixed(1)} GFLOP/s on one`,
  );
  if (peakWall < 0.9 * peakAll)
    console.log('note: the wall-time peak is below the cores\' peak: other processes are using the cores');
  const ctx: BenchContext = { peakGflops: peakAll, peakOneGflops: peakOne, quick, threads };

  const casesDir = join(here, 'cases');
  const files = readdirSync(casesDir)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .filter((f) => filters.length === 0 || filters.some((flt) => f.includes(flt)))
    .sort((a, b) => (a === 'gemm.ts' ? -1 : b === 'gemm.ts' ? 1 : a.localeCompare(b)));
  if (files.length === 0) throw new Error(`no bench case matches ${filters.join(', ')}`);

  const rows: BenchRow[] = [
    { group: 'peak', name: `fma f32, ${threads} cores`, ms: 0, gflops: peakAll, note: 'threads x per-CPU-second rate' },
    { group: 'peak', name: `fma f32, ${threads} threads, wall time`, ms: 0, gflops: peakWall, ratio: peakWall / peakAll, vs: 'fma peak' },
    { group: 'peak', name: 'fma f32, 1 core', ms: 0, gflops: peakOne },
  ];
  for (const file of files) {
    const mod = (await import(pathToFileURL(join(casesDir, file)).href)) as { default?: BenchCase };
    if (typeof mod.default !== 'function') throw new Error(`bench/cases/${file} has no default BenchCase export`);
    console.log(`\n== ${file}`);
    const got = await mod.default(ctx);
    printTable(got);
    rows.push(...got);
  }
  const loadEnd = loadavg();

  console.log('\n== all');
  printTable(rows);
  const date = new Date();
  const day = date.toISOString().slice(0, 10);
  const slug = (cpu.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '') || hostname()).toLowerCase();
  const results = join(here, 'results');
  mkdirSync(results, { recursive: true });
  const meta = {
    date: date.toISOString(), host: hostname(), cpu, logicalCores: cpus().length, threads,
    kernel: native.gemmKernelName(), quick, filters, peakGflops: { all: peakAll, wall: peakWall, one: peakOne },
    loadAverage: { start: loadStart, end: loadEnd },
  };
  const parts = [slug, day, ...filters.map((f) => f.replace(/[^A-Za-z0-9]+/g, '-')), ...(quick ? ['quick'] : [])];
  const jsonPath = join(results, `${parts.join('-')}.json`);
  writeFileSync(jsonPath, `${JSON.stringify({ ...meta, rows }, null, 2)}\n`);
  const md = [
    `# Benchmark results (${day})`,
    '',
    `${cpu}, ${cpus().length} logical cores, ${threads} engine threads, GEMM micro-kernel ${meta.kernel}${quick ? ', quick mode' : ''}.`,
    `FMA peak ${peakAll.toFixed(1)} GFLOP/s on ${threads} cores (${peakWall.toFixed(1)} in wall time while measuring), ${peakOne.toFixed(1)} GFLOP/s on one.`,
    `Load average ${loadStart.map((x) => x.toFixed(2)).join(' ')} at start, ${loadEnd.map((x) => x.toFixed(2)).join(' ')} at the end.`,
    '',
    markdown(rows),
    '',
  ].join('\n');
  const mdPath = jsonPath.replace(/\.json$/, '.md');
  writeFileSync(mdPath, md);
  writeFileSync(join(results, 'latest.md'), md);
  console.log(`\nwrote ${jsonPath}, ${mdPath} and ${join(results, 'latest.md')}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
