// FlowMatchEulerDiscreteScheduler (diffusers scheduling_flow_match_euler_discrete.py): the Euler
// solver of the flow ODE, x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v. The schedule follows the
// reference's numerics: float64 numpy arithmetic up to the shift, then float32 tensors (sigmas,
// timesteps = sigmas * 1000 and the step's dt are float32 values there, rounded here with fround).
import { add, mul } from '../engine/ops/basic.js';
import type { Tensor } from '../engine/tensor.js';
import { ConfigReader, linspace, SchedulerConfigError, type SchedulerConfigJson, type TimeShiftType } from './common.js';

const NAME = 'FlowMatchEulerDiscreteScheduler';

export interface FlowMatchEulerConfig {
  numTrainTimesteps: number;
  shift: number;
  useDynamicShifting: boolean;
  baseShift: number;
  maxShift: number;
  baseImageSeqLen: number;
  maxImageSeqLen: number;
  invertSigmas: boolean;
  shiftTerminal: number | null;
  useKarrasSigmas: boolean;
  useExponentialSigmas: boolean;
  timeShiftType: TimeShiftType;
}

export function parseFlowMatchEulerConfig(json: SchedulerConfigJson): FlowMatchEulerConfig {
  const r = new ConfigReader(NAME, json);
  r.requireOff(['use_beta_sigmas', 'stochastic_sampling']);
  const useKarrasSigmas = r.bool('use_karras_sigmas', false);
  const useExponentialSigmas = r.bool('use_exponential_sigmas', false);
  if (useKarrasSigmas && useExponentialSigmas)
    throw new SchedulerConfigError(NAME, 'only one of use_karras_sigmas and use_exponential_sigmas can be set');
  const shiftTerminal = r.optionalNumber('shift_terminal');
  return {
    numTrainTimesteps: r.integer('num_train_timesteps', 1000, 1),
    shift: r.number('shift', 1.0),
    useDynamicShifting: r.bool('use_dynamic_shifting', false),
    baseShift: r.number('base_shift', 0.5),
    maxShift: r.number('max_shift', 1.15),
    baseImageSeqLen: r.integer('base_image_seq_len', 256, 1),
    maxImageSeqLen: r.integer('max_image_seq_len', 4096, 1),
    invertSigmas: r.bool('invert_sigmas', false),
    shiftTerminal: shiftTerminal === 0 ? null : shiftTerminal,
    useKarrasSigmas,
    useExponentialSigmas,
    timeShiftType: r.choice('time_shift_type', 'exponential', ['exponential', 'linear'] as const),
  };
}

export interface FlowMatchSetTimestepsOptions {
  /** custom sigmas (before shifting), one per step */
  sigmas?: number[];
  /** custom timesteps (before shifting), one per step */
  timesteps?: number[];
  /** resolution-dependent shift, required with use_dynamic_shifting */
  mu?: number;
}

/**
 * The linear interpolation of mu over the image token count that FLUX-style pipelines use
 * (calculate_shift): base_shift at base_image_seq_len, max_shift at max_image_seq_len.
 */
export function calculateShift(imageSeqLen: number, c: Pick<FlowMatchEulerConfig, 'baseShift' | 'maxShift' | 'baseImageSeqLen' | 'maxImageSeqLen'>): number {
  const m = (c.maxShift - c.baseShift) / (c.maxImageSeqLen - c.baseImageSeqLen);
  const b = c.baseShift - m * c.baseImageSeqLen;
  return imageSeqLen * m + b;
}

export class FlowMatchEulerDiscreteScheduler {
  readonly config: FlowMatchEulerConfig;
  /** float32 timesteps (sigma * num_train_timesteps), one per step */
  timesteps: number[] = [];
  /** float32 sigmas, one per step plus the terminal one */
  sigmas: number[] = [];
  /** bounds of the training schedule; pipelines may override them before setTimesteps (Z-Image sets sigmaMin = 0) */
  sigmaMin: number;
  sigmaMax: number;
  private shiftValue: number;
  private stepIdx: number | null = null;
  private beginIdx: number | null = null;

  constructor(json: SchedulerConfigJson) {
    const c = (this.config = parseFlowMatchEulerConfig(json));
    this.shiftValue = c.shift;
    // training schedule: float32 linspace(1, N, N) reversed, / N, shifted in float32 unless dynamic
    const n = c.numTrainTimesteps;
    const first = Math.fround(Math.fround(n) / n);
    const last = Math.fround(Math.fround(1) / n);
    const shiftF32 = (s: number) => (c.useDynamicShifting ? s : Math.fround(Math.fround(c.shift * s) / Math.fround(1 + Math.fround((c.shift - 1) * s))));
    this.sigmaMax = shiftF32(first);
    this.sigmaMin = shiftF32(last);
  }

  get shift(): number {
    return this.shiftValue;
  }

  setShift(shift: number): void {
    this.shiftValue = shift;
  }

  get stepIndex(): number | null {
    return this.stepIdx;
  }

  get numInferenceSteps(): number {
    return this.timesteps.length;
  }

  setBeginIndex(index = 0): void {
    this.beginIdx = index;
  }

  setTimesteps(numInferenceSteps: number | null, opts: FlowMatchSetTimestepsOptions = {}): void {
    const c = this.config;
    if (c.useDynamicShifting && opts.mu === undefined) throw new Error(`${NAME}: mu must be passed when use_dynamic_shifting is true`);
    const { sigmas: customSigmas, timesteps: customTimesteps } = opts;
    if (customSigmas && customTimesteps && customSigmas.length !== customTimesteps.length)
      throw new RangeError(`${NAME}: sigmas and timesteps must have the same length`);
    let n: number;
    if (numInferenceSteps !== null) {
      if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1)
        throw new RangeError(`${NAME}: num_inference_steps must be an integer >= 1, got ${numInferenceSteps}`);
      if ((customSigmas && customSigmas.length !== numInferenceSteps) || (customTimesteps && customTimesteps.length !== numInferenceSteps))
        throw new RangeError(`${NAME}: sigmas and timesteps must have num_inference_steps (${numInferenceSteps}) entries`);
      n = numInferenceSteps;
    } else {
      const given = customSigmas ?? customTimesteps;
      if (!given || given.length === 0) throw new RangeError(`${NAME}: pass num_inference_steps, sigmas or timesteps`);
      n = given.length;
    }

    // Custom sigmas/timesteps are float32 numpy arrays in the reference, so the shift arithmetic on
    // them runs in float32 there (numpy keeps float32 with Python scalars); the default schedule
    // is float64. `r` rounds every intermediate accordingly.
    const r = customSigmas || customTimesteps ? Math.fround : (x: number) => x;
    let sigmas: number[];
    if (customSigmas) {
      sigmas = customSigmas.map((s) => Math.fround(s));
    } else if (customTimesteps) {
      sigmas = customTimesteps.map((t) => r(Math.fround(t) / c.numTrainTimesteps));
    } else {
      sigmas = linspace(this.sigmaMax * c.numTrainTimesteps, this.sigmaMin * c.numTrainTimesteps, n).map((t) => t / c.numTrainTimesteps);
    }
    if (c.useDynamicShifting) {
      const m = r(c.timeShiftType === 'exponential' ? Math.exp(opts.mu as number) : (opts.mu as number));
      sigmas = sigmas.map((s) => r(m / r(m + r(r(1 / s) - 1))));
    } else {
      const k = this.shiftValue;
      sigmas = sigmas.map((s) => r(r(k * s) / r(1 + r((k - 1) * s))));
    }
    if (c.shiftTerminal !== null) {
      const last = sigmas[sigmas.length - 1] as number;
      const scale = r(r(1 - last) / r(1 - c.shiftTerminal));
      sigmas = sigmas.map((s) => r(1 - r(r(1 - s) / scale)));
    }
    if (c.useKarrasSigmas) sigmas = karras(sigmas, n);
    else if (c.useExponentialSigmas) sigmas = exponential(sigmas, n);

    let f32 = sigmas.map((s) => Math.fround(s));
    let timesteps = f32.map((s) => Math.fround(s * c.numTrainTimesteps));
    if (c.invertSigmas) {
      f32 = f32.map((s) => Math.fround(1 - s));
      timesteps = f32.map((s) => Math.fround(s * c.numTrainTimesteps));
      f32.push(1);
    } else {
      f32.push(0);
    }
    this.timesteps = timesteps;
    this.sigmas = f32;
    this.stepIdx = null;
    this.beginIdx = null;
  }

  private indexForTimestep(timestep: number): number {
    const matches: number[] = [];
    const t = Math.fround(timestep);
    this.timesteps.forEach((v, i) => {
      if (v === t) matches.push(i);
    });
    if (matches.length === 0) throw new RangeError(`${NAME}: timestep ${timestep} is not in the schedule`);
    return (matches.length > 1 ? matches[1] : matches[0]) as number;
  }

  /** sample + (sigma_next - sigma) * modelOutput; returns a new tensor. */
  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    if (this.timesteps.length === 0) throw new Error(`${NAME}: call setTimesteps() before step()`);
    if (this.stepIdx === null) this.stepIdx = this.beginIdx ?? this.indexForTimestep(timestep);
    const i = this.stepIdx;
    if (i >= this.timesteps.length) throw new Error(`${NAME}: step() called after the last timestep`);
    const dt = Math.fround((this.sigmas[i + 1] as number) - (this.sigmas[i] as number));
    const delta = mul(modelOutput, dt);
    const prev = add(sample, delta);
    delta.dispose();
    this.stepIdx = i + 1;
    return prev;
  }

  /** Forward process x_t = sigma noise + (1 - sigma) sample at the schedule's current (or begin) index. */
  scaleNoise(sample: Tensor, noise: Tensor): Tensor {
    const i = this.stepIdx ?? this.beginIdx;
    if (i === null) throw new Error(`${NAME}: scaleNoise needs setBeginIndex() or a started schedule`);
    const sigma = this.sigmas[i] as number;
    const a = mul(noise, sigma);
    const b = mul(sample, 1 - sigma);
    const out = add(a, b);
    a.dispose();
    b.dispose();
    return out;
  }
}

function karras(inSigmas: number[], n: number): number[] {
  const sigmaMin = inSigmas[inSigmas.length - 1] as number;
  const sigmaMax = inSigmas[0] as number;
  const rho = 7.0;
  const ramp = linspace(0, 1, n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

function exponential(inSigmas: number[], n: number): number[] {
  const sigmaMin = inSigmas[inSigmas.length - 1] as number;
  const sigmaMax = inSigmas[0] as number;
  return linspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map((x) => Math.exp(x));
}
