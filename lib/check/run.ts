// Runs the checks of a golden-format case folder with the registered runners and compares every
// output with the reference tensors of io.safetensors under the check's tolerance.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type Device, disposeAll, empty, type Tensor } from '../engine/tensor.js';
import { readModelIndex } from '../io/diffusers.js';
import { SafetensorsFile } from '../io/safetensors.js';
import { type CaseSpec, type CheckContext, type CheckSpec, findCheck, type Tolerance } from './registry.js';

export interface OutputResult {
  output: string;
  metric: 'rel_l2' | 'exact';
  /** the rel_l2 bound (undefined for exact) */
  max?: number;
  /** rel-L2 error of each compared tensor (one, or one per list item); NaN where not comparable */
  errors: number[];
  /** elements that differ (exact metric) */
  mismatches?: number;
  pass: boolean;
  reason?: string;
}

export interface CheckResult {
  name: string;
  kind: string;
  pass: boolean;
  /** why the check failed or could not run (first failing output, the runner's error, or no runner) */
  reason?: string;
  outputs: OutputResult[];
  /** the tolerances of case.json, by output */
  tolerance: Record<string, Tolerance>;
  /** largest rel-L2 error over all outputs; null when nothing was compared */
  worstRelL2: number | null;
  ms: number;
}

export interface CaseResult {
  case: string;
  caseDir: string;
  pipelineClass: string;
  device: Device;
  checks: CheckResult[];
  pass: boolean;
}

export interface RunCaseOptions {
  device?: Device;
  /** run only the checks with these names */
  only?: string[];
}

/** ||a - b|| / ||b|| in float64 (||a - b|| when b is all zeros). */
export function relL2Error(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < expected.length; ++i) {
    const e = expected[i] as number;
    const d = (actual[i] as number) - e;
    num += d * d;
    den += e * e;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function isInteger(t: Tensor): boolean {
  return t.dtype === 'int32' || t.dtype === 'int64' || t.dtype === 'uint8';
}

/** Compares one computed tensor with its reference; returns the rel-L2 error and a failure reason. */
function compareTensor(actual: Tensor, expected: Tensor, tol: Tolerance): { error: number; mismatches?: number; reason?: string } {
  if (!sameShape(actual.shape, expected.shape))
    return { error: Number.NaN, reason: `shape [${actual.shape.join(', ')}] differs from the reference [${expected.shape.join(', ')}]` };
  const a = isInteger(actual) ? actual.toArray() : actual.toFloat32();
  const e = isInteger(expected) ? expected.toArray() : expected.toFloat32();
  const error = relL2Error(a, e);
  if (tol.metric === 'exact') {
    let mismatches = 0;
    for (let i = 0; i < e.length; ++i) if (a[i] !== e[i]) ++mismatches;
    return mismatches ? { error, mismatches, reason: `${mismatches} of ${e.length} values differ` } : { error, mismatches };
  }
  if (!Number.isFinite(error)) return { error, reason: 'output holds NaN or infinite values' };
  if (error > tol.max) return { error, reason: `rel-L2 ${formatError(error)} exceeds ${tol.max}` };
  return { error };
}

export function formatError(e: number): string {
  if (Number.isNaN(e)) return '-';
  if (e === 0) return '0';
  return e.toExponential(2);
}

function compareOutput(
  output: string,
  refKeys: string | string[],
  got: Tensor | Tensor[] | undefined,
  tol: Tolerance,
  io: SafetensorsFile,
): OutputResult {
  const base: OutputResult = {
    output,
    metric: tol.metric,
    ...(tol.metric === 'rel_l2' ? { max: tol.max } : {}),
    errors: [],
    pass: false,
  };
  if (got === undefined) return { ...base, reason: `the runner returned no '${output}'` };
  const keys = Array.isArray(refKeys) ? refKeys : [refKeys];
  const tensors = Array.isArray(got) ? got : [got];
  if (Array.isArray(refKeys) !== Array.isArray(got))
    return { ...base, reason: `'${output}' must be ${Array.isArray(refKeys) ? `a list of ${keys.length} tensors` : 'one tensor'}` };
  if (tensors.length !== keys.length) return { ...base, reason: `'${output}' has ${tensors.length} items, the reference ${keys.length}` };
  let mismatches = 0;
  let reason: string | undefined;
  keys.forEach((key, i) => {
    const expected = io.tensor(key);
    try {
      const r = compareTensor(tensors[i]!, expected, tol);
      base.errors.push(r.error);
      mismatches += r.mismatches ?? 0;
      if (r.reason && !reason) reason = Array.isArray(refKeys) ? `item ${i}: ${r.reason}` : r.reason;
    } finally {
      expected.dispose();
    }
  });
  return {
    ...base,
    ...(tol.metric === 'exact' ? { mismatches } : {}),
    pass: reason === undefined,
    ...(reason !== undefined ? { reason: `${output}: ${reason}` } : {}),
  };
}

function makeContext(
  caseDir: string,
  modelDir: string,
  pipelineClass: string,
  spec: CaseSpec,
  check: CheckSpec,
  device: Device,
  io: SafetensorsFile,
  owned: Tensor[],
): CheckContext {
  const ioTensor = (key: string): Tensor => {
    if (!io.has(key)) throw new Error(`io.safetensors has no tensor '${key}' (check '${check.name}')`);
    const t = io.tensor(key);
    owned.push(t);
    return t;
  };
  const input = (name: string): Tensor | Tensor[] => {
    const ref = check.inputs[name];
    if (typeof ref === 'string') return ioTensor(ref);
    if (Array.isArray(ref) && ref.every((k) => typeof k === 'string')) return (ref as string[]).map(ioTensor);
    throw new Error(`check '${check.name}' has no tensor input '${name}' (inputs: ${Object.keys(check.inputs).join(', ') || 'none'})`);
  };
  return {
    caseDir,
    modelDir,
    pipelineClass,
    check,
    case: spec,
    device,
    input,
    inputTensor(name) {
      const v = input(name);
      if (Array.isArray(v)) throw new Error(`input '${name}' of check '${check.name}' is a list`);
      return v;
    },
    inputList(name) {
      const v = input(name);
      if (!Array.isArray(v)) throw new Error(`input '${name}' of check '${check.name}' is a single tensor, not a list`);
      return v;
    },
    ioTensor,
  };
}

async function runOne(
  caseDir: string,
  modelDir: string,
  pipelineClass: string,
  spec: CaseSpec,
  check: CheckSpec,
  device: Device,
  io: SafetensorsFile,
  deviceProblem: string | undefined,
): Promise<CheckResult> {
  const started = performance.now();
  const result = (fields: Partial<CheckResult>): CheckResult => ({
    name: check.name,
    kind: check.kind,
    pass: false,
    outputs: [],
    tolerance: check.tolerance,
    worstRelL2: null,
    ...fields,
    ms: performance.now() - started,
  });
  const runner = findCheck(pipelineClass, check.kind);
  if (!runner) return result({ reason: `check kind '${check.kind}' is not implemented for ${pipelineClass}` });
  if (deviceProblem) return result({ reason: deviceProblem });
  const owned: Tensor[] = [];
  let produced: Record<string, Tensor | Tensor[]> | undefined;
  try {
    produced = await runner(makeContext(caseDir, modelDir, pipelineClass, spec, check, device, io, owned));
    const outputs = Object.entries(check.outputs).map(([name, keys]) => {
      const tol = check.tolerance[name];
      if (!tol) throw new Error(`case.json gives no tolerance for output '${name}' of check '${check.name}'`);
      return compareOutput(name, keys, produced![name], tol, io);
    });
    const errors = outputs.flatMap((o) => o.errors).filter((e) => !Number.isNaN(e));
    const failed = outputs.find((o) => !o.pass);
    return result({
      pass: !failed,
      ...(failed ? { reason: failed.reason } : {}),
      outputs,
      worstRelL2: errors.length ? Math.max(...errors) : null,
    });
  } catch (err) {
    return result({ reason: `error: ${err instanceof Error ? err.message : String(err)}` });
  } finally {
    disposeAll(produced);
    for (const t of owned) t.dispose();
  }
}

/** Reads <caseDir>/case.json. */
export async function readCase(caseDir: string): Promise<CaseSpec> {
  const file = join(caseDir, 'case.json');
  let spec: CaseSpec;
  try {
    spec = JSON.parse(await readFile(file, 'utf8')) as CaseSpec;
  } catch (err) {
    throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
  if (!spec || typeof spec !== 'object' || !Array.isArray(spec.checks)) throw new Error(`${file}: 'checks' must be a list`);
  for (const [i, c] of spec.checks.entries()) {
    if (!c || typeof c.name !== 'string' || typeof c.kind !== 'string' || typeof c.outputs !== 'object' || c.outputs === null)
      throw new Error(`${file}: check ${i} needs name, kind and outputs`);
    c.inputs ??= {};
    c.params ??= {};
    c.tolerance ??= {};
  }
  return spec;
}

/** Why tensors cannot be created on device, or undefined when they can. */
function probeDevice(device: Device): string | undefined {
  if (device === 'cpu') return undefined;
  try {
    empty([1], { device }).dispose();
    return undefined;
  } catch (err) {
    return `device ${device} is not usable: ${(err as Error).message}`;
  }
}

/** Runs every check of a case folder (or those named in only) and compares with the reference. */
export async function runCase(caseDir: string, opts: RunCaseOptions = {}): Promise<CaseResult> {
  const device = opts.device ?? 'cpu';
  const spec = await readCase(caseDir);
  const modelDir = join(caseDir, spec.model_dir ?? 'model');
  const pipelineClass = (await readModelIndex(modelDir)).className;
  let checks = spec.checks;
  if (opts.only) {
    const names = new Set(checks.map((c) => c.name));
    const unknown = opts.only.filter((n) => !names.has(n));
    if (unknown.length) throw new Error(`${join(caseDir, 'case.json')} has no check ${unknown.map((n) => `'${n}'`).join(', ')} (checks: ${[...names].join(', ')})`);
    checks = checks.filter((c) => opts.only!.includes(c.name));
  }
  const io = SafetensorsFile.open(join(caseDir, spec.io_file ?? 'io.safetensors'));
  try {
    const deviceProblem = probeDevice(device);
    const results: CheckResult[] = [];
    for (const check of checks) results.push(await runOne(caseDir, modelDir, pipelineClass, spec, check, device, io, deviceProblem));
    return { case: spec.case ?? caseDir, caseDir, pipelineClass, device, checks: results, pass: results.every((r) => r.pass) };
  } finally {
    io.dispose();
  }
}
