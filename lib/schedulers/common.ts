// Pieces shared by the schedulers: reading scheduler_config.json values, the flow-matching time
// shifts, and linear combinations of latent tensors (every per-element operation runs natively).
import { add, mul } from '../engine/ops/basic.js';
import type { Tensor } from '../engine/tensor.js';

/** A scheduler_config.json (or a model_index-level override) as parsed JSON. */
export type SchedulerConfigJson = Record<string, unknown>;

/** A scheduler_config.json value that the scheduler cannot use. */
export class SchedulerConfigError extends Error {
  constructor(scheduler: string, message: string) {
    super(`${scheduler}: ${message}`);
    this.name = 'SchedulerConfigError';
  }
}

/** Typed access to config fields with diffusers' defaults; a present value of the wrong type throws. */
export class ConfigReader {
  constructor(
    private readonly scheduler: string,
    private readonly json: SchedulerConfigJson,
  ) {}

  private value(key: string): unknown {
    const v = this.json[key];
    return v === undefined ? null : v;
  }

  number(key: string, dflt: number): number {
    const v = this.value(key);
    if (v === null) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new SchedulerConfigError(this.scheduler, `${key} must be a number, got ${JSON.stringify(v)}`);
    return v;
  }

  optionalNumber(key: string): number | null {
    const v = this.value(key);
    if (v === null) return null;
    return this.number(key, 0);
  }

  integer(key: string, dflt: number, min = 0): number {
    const v = this.number(key, dflt);
    if (!Number.isInteger(v) || v < min) throw new SchedulerConfigError(this.scheduler, `${key} must be an integer >= ${min}, got ${v}`);
    return v;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.value(key);
    if (v === null) return dflt;
    if (typeof v !== 'boolean') throw new SchedulerConfigError(this.scheduler, `${key} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  choice<T extends string>(key: string, dflt: T, allowed: readonly T[]): T {
    const v = this.value(key);
    if (v === null) return dflt;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v))
      throw new SchedulerConfigError(this.scheduler, `${key} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  integerList(key: string): number[] {
    const v = this.value(key);
    if (v === null) return [];
    if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x)))
      throw new SchedulerConfigError(this.scheduler, `${key} must be a list of integers, got ${JSON.stringify(v)}`);
    return v as number[];
  }

  /** Options this implementation does not provide must be off (false/null) in the config. */
  requireOff(keys: string[]): void {
    for (const key of keys) {
      const v = this.value(key);
      if (v !== null && v !== false) throw new SchedulerConfigError(this.scheduler, `${key}=${JSON.stringify(v)} is not supported`);
    }
  }
}

export type TimeShiftType = 'exponential' | 'linear';

/**
 * Resolution-dependent time shift of a sigma t in (0, 1] (diffusers time_shift with sigma=1):
 * exponential e^mu / (e^mu + (1/t - 1)), linear mu / (mu + (1/t - 1)).
 */
export function timeShift(type: TimeShiftType, mu: number, t: number): number {
  const m = type === 'exponential' ? Math.exp(mu) : mu;
  return m / (m + (1 / t - 1));
}

/** Stretches a shifted schedule so that its last value equals `terminal` (diffusers stretch_shift_to_terminal). */
export function stretchToTerminal(sigmas: number[], terminal: number): number[] {
  const last = sigmas[sigmas.length - 1] as number;
  const scale = (1 - last) / (1 - terminal);
  return sigmas.map((s) => 1 - (1 - s) / scale);
}

/** numpy.linspace(start, stop, num) in float64, endpoint included, same arithmetic as numpy. */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const div = num - 1;
  const step = (stop - start) / div;
  const out = new Array<number>(num);
  for (let i = 0; i < num; ++i) out[i] = start + i * step;
  out[num - 1] = stop;
  return out;
}

/** sum_i coef_i * x_i over same-shaped tensors (at least one term). */
export function linearCombination(terms: Array<[number, Tensor]>): Tensor {
  const [first, ...rest] = terms;
  if (!first) throw new RangeError('linearCombination needs at least one term');
  let acc = mul(first[1], first[0]);
  for (const [c, x] of rest) {
    const scaled = mul(x, c);
    const next = add(acc, scaled);
    scaled.dispose();
    acc.dispose();
    acc = next;
  }
  return acc;
}
