// node-diffusion check <case-dir>: runs the parity checks of a golden-format folder (case.json,
// io.safetensors, model/) with this build and prints one line per check.
import { parseArgs } from 'node:util';
import '../check/all.js';
import { type CaseResult, formatError, runCase } from '../check/run.js';
import type { Tolerance } from '../check/registry.js';
import type { Device } from '../engine/tensor.js';
import type { Command } from './main.js';

const USAGE = `Usage: node-diffusion check <case-dir> [--device cpu|cuda] [--json] [--only name,...]

Runs every check listed in <case-dir>/case.json with this build on the case's model folder and
compares the outputs with the reference tensors in io.safetensors. Prints one line per check (name,
kind, worst rel-L2 error, tolerance, PASS/FAIL) and exits with 1 if any check fails or cannot run.

Options:
  --device <d>     cpu (default), cuda or cuda:<n>
  --json           print the results as JSON
  --only <names>   comma-separated check names to run
  -h, --help       show this help`;

/** Tolerance column: 'exact', the tightest rel-L2 bound, or both ('exact/1e-06'). */
function toleranceText(tolerance: Record<string, Tolerance>): string {
  const tols = Object.values(tolerance);
  const bounds = tols.flatMap((t) => (t.metric === 'rel_l2' ? [t.max] : []));
  const parts: string[] = [];
  if (tols.some((t) => t.metric === 'exact')) parts.push('exact');
  if (bounds.length) {
    const b = Math.min(...bounds);
    parts.push(b < 0.01 ? b.toExponential() : String(b));
  }
  return parts.join('/') || '-';
}

/** The human-readable report: a header line, then one line per check and a summary. */
export function formatCaseResult(result: CaseResult): string {
  const rows = result.checks.map((c) => [
    c.name,
    c.kind,
    c.worstRelL2 === null ? '-' : formatError(c.worstRelL2),
    toleranceText(c.tolerance),
    c.pass ? 'PASS' : 'FAIL',
    c.pass ? '' : (c.reason ?? ''),
  ]);
  const head = ['check', 'kind', 'rel-L2', 'tolerance', 'result', ''];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i < cells.length - 1 ? c.padEnd(widths[i]!) : c))
      .join('  ')
      .trimEnd();
  const passed = result.checks.filter((c) => c.pass).length;
  return [
    `${result.case} (${result.pipelineClass}) on ${result.device}`,
    line(head),
    ...rows.map(line),
    `${passed}/${result.checks.length} checks passed`,
  ].join('\n');
}

export const command: Command = {
  summary: 'verify this build against reference outputs of a golden-format case folder',
  async run(argv: string[]): Promise<number> {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          device: { type: 'string', default: 'cpu' },
          json: { type: 'boolean', default: false },
          only: { type: 'string' },
          help: { type: 'boolean', short: 'h', default: false },
        },
      });
    } catch (err) {
      console.error(`${(err as Error).message}\n\n${USAGE}`);
      return 2;
    }
    const { values, positionals } = parsed;
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    if (positionals.length !== 1) {
      console.error(`check takes one case folder\n\n${USAGE}`);
      return 2;
    }
    const device = values.device!;
    if (!/^(cpu|cuda|cuda:\d+)$/.test(device)) {
      console.error(`--device must be cpu, cuda or cuda:<n>, got '${device}'`);
      return 2;
    }
    const only = values.only
      ?.split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const caseDir = positionals[0]!;
    let result: CaseResult;
    try {
      result = await runCase(caseDir, { device: device as Device, ...(only ? { only } : {}) });
    } catch (err) {
      console.error(`check ${caseDir}: ${(err as Error).message}`);
      return 1;
    }
    console.log(values.json ? JSON.stringify(result, null, 2) : formatCaseResult(result));
    return result.pass ? 0 : 1;
  },
};
