// Pieces shared by the schedulers: the flow-matching time shifts, numpy-style linspace, and
// linear combinations of latent tensors (every per-element operation runs natively).
import { add, mul } from '../engine/ops/basic.js';
import type { Tensor } from '../engine/tensor.js';

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
