// Check runners by (pipeline class, check kind): each computes, with this project's code, the
// outputs of one check of a golden-format case (case.json + io.safetensors + model/).
import type { Device, Tensor } from '../engine/tensor.js';

export type Tolerance = { metric: 'rel_l2'; max: number } | { metric: 'exact' };

/** One entry of case.json "checks". */
export interface CheckSpec {
  name: string;
  kind: string;
  description?: string;
  /** argument -> io key, list of io keys, or other JSON (e.g. lora base_weights) */
  inputs: Record<string, unknown>;
  /** output -> io key or list of io keys (list-valued outputs) */
  outputs: Record<string, string | string[]>;
  /** non-tensor arguments: prompts, sizes, steps, ... */
  params: Record<string, unknown>;
  tolerance: Record<string, Tolerance>;
}

/** case.json as a whole (fields the checker uses; the rest is kept). */
export interface CaseSpec {
  case: string;
  model_dir: string;
  io_file: string;
  checks: CheckSpec[];
  [key: string]: unknown;
}

export interface CheckContext {
  caseDir: string;
  /** the case's model folder (diffusers layout) */
  modelDir: string;
  /** the diffusers pipeline class from model_index.json */
  pipelineClass: string;
  check: CheckSpec;
  case: CaseSpec;
  /** where to compute */
  device: Device;
  /**
   * The tensor(s) of an input argument of this check: the io tensor of a key, or the list of
   * tensors of a list of keys. CPU views of io.safetensors, freed after the check; runners move
   * them to ctx.device themselves.
   */
  input(name: string): Tensor | Tensor[];
  /** Like input() for arguments that must be a single tensor. */
  inputTensor(name: string): Tensor;
  /** Like input() for arguments that must be a list of tensors. */
  inputList(name: string): Tensor[];
  /** Any tensor of io.safetensors by key (freed after the check). */
  ioTensor(key: string): Tensor;
}

/**
 * Computes the outputs of one check, keyed by the output names of case.json (a Tensor for a key,
 * a Tensor[] for a list of keys). The checker disposes the returned tensors after comparing.
 */
export type CheckRunner = (ctx: CheckContext) => Promise<Record<string, Tensor | Tensor[]>>;

const runners = new Map<string, CheckRunner>();

function keyOf(pipelineClass: string, kind: string): string {
  return `${pipelineClass}\u0000${kind}`;
}

/** Registers the runner of a check kind for a pipeline class (once per pair). */
export function registerCheck(pipelineClass: string, kind: string, run: CheckRunner): void {
  const key = keyOf(pipelineClass, kind);
  if (runners.has(key)) throw new Error(`a '${kind}' check runner for ${pipelineClass} is already registered`);
  runners.set(key, run);
}

export function findCheck(pipelineClass: string, kind: string): CheckRunner | undefined {
  return runners.get(keyOf(pipelineClass, kind));
}

/** Registered (pipeline class, kind) pairs. */
export function registeredChecks(): Array<{ pipelineClass: string; kind: string }> {
  return [...runners.keys()].map((k) => {
    const [pipelineClass, kind] = k.split('\u0000') as [string, string];
    return { pipelineClass, kind };
  });
}
