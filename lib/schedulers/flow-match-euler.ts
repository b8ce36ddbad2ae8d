// FlowMatchEulerDiscreteScheduler (diffusers scheduling_flow_match_euler_discrete.py): the Euler
// solver of the flow ODE, x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v. The schedule follows the
// reference's numerics: float64 numpy arithmetic up to the shift, then float32 tensors (sigmas,
// timesteps = sigmas * 1000 and the step's dt are float32 values there, rounded here with fround).
import { add, mul } from '../engine/ops/basic.js';
import type { Tensor } from '../engine/tensor.js';
import type { FlowMatchEulerDiscreteSchedulerConfig } from '../io/configs.js';
import { linspace } from './common.js';

const NAME = 'FlowMatchEulerDiscreteScheduler';

function checkSupported(c: FlowMatchEulerDiscreteSchedulerConfig): void {
  const fail = (msg: string) => {
    throw new Error(`${NAME}: ${msg}`);
  };
  if (c.use_beta_sigmas) fail('use_beta_sigmas=true is not supported');
  if (c.stochastic_sampling) fail('stochastic_sampling=true is not supported');
  if (c.use_karras_sigmas && c.use_exponential_sigmas) fail('only one of use_karras_sigmas and use_exponential_sigmas can be set');
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
export function calculateShift(imageSeqLen: number, c: FlowMatchEulerDiscreteSchedulerConfig): number {
  const baseShift = c.base_shift ?? 0.5;
  const maxShift = c.max_shift ?? 1.15;
  const m = (maxShift - baseShift) / (c.max_image_seq_len - c.base_image_seq_len);
  const b = baseShift - m * c.base_image_seq_len;
  return imageSeqLen * m + b;
}

export class FlowMatchEulerDiscreteScheduler {
  readonly config: FlowMatchEulerDiscreteSchedulerConfig;
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

  constructor(config: FlowMatchEulerDiscreteSchedulerConfig) {
    checkSupported(config);
    const c = (this.config = config);
    this.shiftValue = c.shift;
    // training schedule: float32 linspace(1, N, N) reversed, / N, shifted in float32 unless dynamic
    const n = c.num_train_timesteps;
    const first = Math.fround(Math.fround(n) / n);
    const last = Math.fround(Math.fround(1) / n);
    const shiftF32 = (s: number) => (c.use_dynamic_shifting ? s : Math.fround(Math.fround(c.shift * s) / Math.fround(1 + Math.fround((c.shift - 1) * s))));
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
    if (c.use_dynamic_shifting && opts.mu === undefined) throw new Error(`${NAME}: mu must be passed when use_dynamic_shifting is true`);
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
      sigmas = customTimesteps.map((t) => r(Math.fround(t) / c.num_train_timesteps));
    } else {
      sigmas = linspace(this.sigmaMax * c.num_train_timesteps, this.sigmaMin * c.num_train_timesteps, n).map((t) => t / c.num_train_timesteps);
    }
    if (c.use_dynamic_shifting) {
      const m = r(c.time_shift_type === 'exponential' ? Math.exp(opts.mu as number) : (opts.mu as number));
      sigmas = sigmas.map((s) => r(m / r(m + r(r(1 / s) - 1))));
    } else {
      const k = this.shiftValue;
      sigmas = sigmas.map((s) => r(r(k * s) / r(1 + r((k - 1) * s))));
    }
    // diffusers tests `if shift_terminal:`, so 0 means off as null does
    if (c.shift_terminal) {
      const last = sigmas[sigmas.length - 1] as number;
      const scale = r(r(1 - last) / r(1 - c.shift_terminal));
      sigmas = sigmas.map((s) => r(1 - r(r(1 - s) / scale)));
    }
    if (c.use_karras_sigmas) sigmas = karras(sigmas, n);
    else if (c.use_exponential_sigmas) sigmas = exponential(sigmas, n);

    let f32 = sigmas.map((s) => Math.fround(s));
    let timesteps = f32.map((s) => Math.fround(s * c.num_train_timesteps));
    if (c.invert_sigmas) {
      f32 = f32.map((s) => Math.fround(1 - s));
      timesteps = f32.map((s) => Math.fround(s * c.num_train_timesteps));
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
