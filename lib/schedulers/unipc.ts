// UniPCMultistepScheduler (diffusers scheduling_unipc_multistep.py) in flow-matching mode, the
// configuration Wan ships: use_flow_sigmas, flow_prediction, predict_x0, B(h) predictor-corrector.
// The schedule (sigmas, timesteps) is computed in float64 like the reference's numpy code and the
// sigmas are then rounded to float32 as the reference stores them; the per-step coefficients are
// scalars computed here, the latent arithmetic runs as native tensor ops.
import { mul, sub } from '../engine/ops/basic.js';
import { keep, type Tensor } from '../engine/tensor.js';
import type { UniPCMultistepSchedulerConfig } from '../io/configs.js';
import { linearCombination, linspace, stretchToTerminal, timeShift } from './common.js';

const NAME = 'UniPCMultistepScheduler';

/** Rejects configurations outside the flow-matching UniPC this class implements. */
function checkSupported(c: UniPCMultistepSchedulerConfig): void {
  const fail = (msg: string) => {
    throw new Error(`${NAME}: ${msg}`);
  };
  if (!c.use_flow_sigmas) fail('only the flow-matching form (use_flow_sigmas=true) is implemented');
  if (c.prediction_type !== 'flow_prediction') fail(`prediction_type '${c.prediction_type}' is not supported with flow sigmas (flow_prediction)`);
  if (!c.predict_x0) fail('predict_x0=false is not defined for flow_prediction');
  for (const key of ['use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'thresholding', 'rescale_betas_zero_snr'] as const)
    if (c[key]) fail(`${key}=true is not supported`);
}

export interface SetTimestepsOptions {
  /** custom sigmas (one per step, before the shift) instead of the default linear schedule */
  sigmas?: number[];
  /** resolution-dependent shift, required with use_dynamic_shifting */
  mu?: number;
}

/** Solves the small dense system A x = b (Gaussian elimination with partial pivoting, float64). */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row.slice(0, n), b[i] as number]);
  for (let col = 0; col < n; ++col) {
    let pivot = col;
    for (let r = col + 1; r < n; ++r) if (Math.abs(m[r]![col]!) > Math.abs(m[pivot]![col]!)) pivot = r;
    [m[col], m[pivot]] = [m[pivot]!, m[col]!];
    const p = m[col]![col]!;
    if (p === 0) throw new Error(`${NAME}: singular coefficient system`);
    for (let r = col + 1; r < n; ++r) {
      const f = m[r]![col]! / p;
      for (let c = col; c <= n; ++c) m[r]![c]! -= f * m[col]![c]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; --r) {
    let s = m[r]![n]!;
    for (let c = r + 1; c < n; ++c) s -= m[r]![c]! * x[c]!;
    x[r] = s / m[r]![r]!;
  }
  return x;
}

/** The B(h) coefficients shared by predictor and corrector for one update of the given order. */
interface BhCoefficients {
  hPhi1: number;
  bH: number;
  /** R[i][k] = rks[k]^i */
  R: number[][];
  b: number[];
}

export class UniPCMultistepScheduler {
  readonly config: UniPCMultistepSchedulerConfig;
  /** integer timesteps passed to the model, one per step */
  timesteps: number[] = [];
  /** float32-rounded sigmas, one per step plus the final one */
  sigmas: number[] = [];
  readonly initNoiseSigma = 1.0;

  private modelOutputs: Array<Tensor | null> = [];
  private lastSample: Tensor | null = null;
  private lowerOrderNums = 0;
  private thisOrder = 0;
  private stepIdx: number | null = null;
  private beginIdx: number | null = null;

  constructor(config: UniPCMultistepSchedulerConfig) {
    checkSupported(config);
    this.config = config;
  }

  get stepIndex(): number | null {
    return this.stepIdx;
  }

  get numInferenceSteps(): number {
    return this.timesteps.length;
  }

  /** Makes the first step() start at this index instead of looking the timestep up (pipelines pass 0). */
  setBeginIndex(index = 0): void {
    this.beginIdx = index;
  }

  setTimesteps(numInferenceSteps: number | null, opts: SetTimestepsOptions = {}): void {
    const c = this.config;
    if (c.use_dynamic_shifting && opts.mu === undefined) throw new Error(`${NAME}: mu must be passed when use_dynamic_shifting is true`);
    let n = numInferenceSteps ?? 0;
    let sigmas: number[];
    if (opts.sigmas) {
      if (opts.sigmas.length === 0) throw new RangeError(`${NAME}: sigmas must not be empty`);
      sigmas = [...opts.sigmas];
      n = sigmas.length;
    } else {
      if (!Number.isInteger(n) || n < 1) throw new RangeError(`${NAME}: num_inference_steps must be an integer >= 1, got ${numInferenceSteps}`);
      sigmas = linspace(1, 1 / c.num_train_timesteps, n + 1).slice(0, n);
    }
    if (c.use_dynamic_shifting) sigmas = sigmas.map((s) => timeShift(c.time_shift_type, opts.mu as number, s));
    else sigmas = sigmas.map((s) => (c.flow_shift * s) / (1 + (c.flow_shift - 1) * s));
    // diffusers tests `if shift_terminal:`, so 0 means off as null does
    if (c.shift_terminal) sigmas = stretchToTerminal(sigmas, c.shift_terminal);
    // a first sigma of exactly 1 would make log(alpha) infinite in the first updates
    const eps = 1e-6;
    if (Math.abs((sigmas[0] as number) - 1) < eps) sigmas[0] = (sigmas[0] as number) - eps;
    this.timesteps = sigmas.map((s) => Math.trunc(s * c.num_train_timesteps));
    const last = c.final_sigmas_type === 'zero' ? 0 : (sigmas[sigmas.length - 1] as number);
    this.sigmas = [...sigmas, last].map((s) => Math.fround(s));
    this.resetState();
  }

  private resetState(): void {
    for (const t of this.modelOutputs) t?.dispose();
    this.lastSample?.dispose();
    this.modelOutputs = new Array<Tensor | null>(this.config.solver_order).fill(null);
    this.lastSample = null;
    this.lowerOrderNums = 0;
    this.thisOrder = 0;
    this.stepIdx = null;
    this.beginIdx = null;
  }

  /** Frees the tensors kept between steps. */
  dispose(): void {
    this.resetState();
  }

  /** diffusers index_for_timestep: the second match when the timestep occurs twice, the last index when absent. */
  private indexForTimestep(timestep: number): number {
    const matches: number[] = [];
    this.timesteps.forEach((t, i) => {
      if (t === timestep) matches.push(i);
    });
    if (matches.length === 0) return this.timesteps.length - 1;
    return (matches.length > 1 ? matches[1] : matches[0]) as number;
  }

  /** Flow matching: x_t = (1 - sigma) x0 + sigma noise, so alpha_t = 1 - sigma and lambda = log(alpha / sigma). */
  private lambda(i: number): { alpha: number; sigma: number; lambda: number } {
    const sigma = this.sigmas[i] as number;
    const alpha = 1 - sigma;
    return { alpha, sigma, lambda: Math.log(alpha) - Math.log(sigma) };
  }

  private bhCoefficients(h: number, rks: number[], order: number): BhCoefficients {
    const hh = -h; // predict_x0
    const hPhi1 = Math.expm1(hh);
    let hPhiK = hPhi1 / hh - 1;
    let factorial = 1;
    const bH = this.config.solver_type === 'bh1' ? hh : Math.expm1(hh);
    const R: number[][] = [];
    const b: number[] = [];
    for (let i = 1; i <= order; ++i) {
      R.push(rks.map((r) => r ** (i - 1)));
      b.push((hPhiK * factorial) / bH);
      factorial *= i + 1;
      hPhiK = hPhiK / hh - 1 / factorial;
    }
    return { hPhi1, bH, R, b };
  }

  /** The data prediction x0 = sample - sigma * v of a flow model output v. */
  private convertModelOutput(modelOutput: Tensor, sample: Tensor, stepIndex: number): Tensor {
    const scaled = mul(modelOutput, this.sigmas[stepIndex] as number);
    const x0 = sub(sample, scaled);
    scaled.dispose();
    return x0;
  }

  private history(k: number): Tensor {
    const t = this.modelOutputs[this.modelOutputs.length - 1 - k];
    if (!t) throw new Error(`${NAME}: missing model output history`);
    return t;
  }

  /** UniP: predicts the sample at sigmas[i+1] from the current sample and the x0 history. */
  private predictor(sample: Tensor, order: number): Tensor {
    const i = this.stepIdx as number;
    const m0 = this.history(0);
    const t = this.lambda(i + 1);
    const s0 = this.lambda(i);
    const h = t.lambda - s0.lambda;
    const rks: number[] = [];
    const others: Array<{ rk: number; m: Tensor }> = [];
    for (let k = 1; k < order; ++k) {
      const rk = (this.lambda(i - k).lambda - s0.lambda) / h;
      rks.push(rk);
      others.push({ rk, m: this.history(k) });
    }
    rks.push(1);
    const { hPhi1, bH, R, b } = this.bhCoefficients(h, rks, order);
    let rhosP: number[] = [];
    if (order === 2) rhosP = [0.5];
    else if (order > 2) rhosP = solve(R.slice(0, -1).map((row) => row.slice(0, -1)), b.slice(0, -1));
    // x_t = sigma_t/sigma_s0 x - alpha_t h_phi_1 m0 - alpha_t B_h sum_k rho_k (m_k - m0) / r_k
    let m0Coef = -t.alpha * hPhi1;
    const terms: Array<[number, Tensor]> = [[t.sigma / s0.sigma, sample]];
    others.forEach(({ rk, m }, k) => {
      const c = (-t.alpha * bH * (rhosP[k] as number)) / rk;
      terms.push([c, m]);
      m0Coef -= c;
    });
    terms.push([m0Coef, m0]);
    return linearCombination(terms);
  }

  /** UniC: corrects the sample at sigmas[i] with the model output there, given the sample before the last predictor. */
  private corrector(thisModelOutput: Tensor, lastSample: Tensor, order: number): Tensor {
    const i = this.stepIdx as number;
    const m0 = this.history(0);
    const t = this.lambda(i);
    const s0 = this.lambda(i - 1);
    const h = t.lambda - s0.lambda;
    const rks: number[] = [];
    const others: Array<{ rk: number; m: Tensor }> = [];
    for (let k = 1; k < order; ++k) {
      const rk = (this.lambda(i - (k + 1)).lambda - s0.lambda) / h;
      rks.push(rk);
      others.push({ rk, m: this.history(k) });
    }
    rks.push(1);
    const { hPhi1, bH, R, b } = this.bhCoefficients(h, rks, order);
    const rhosC = order === 1 ? [0.5] : solve(R, b);
    const rhoT = rhosC[rhosC.length - 1] as number;
    // x_t = sigma_t/sigma_s0 x - alpha_t h_phi_1 m0
    //       - alpha_t B_h (sum_k rho_k (m_k - m0) / r_k + rho_t (model_t - m0))
    const tCoef = -t.alpha * bH * rhoT;
    let m0Coef = -t.alpha * hPhi1 - tCoef;
    const terms: Array<[number, Tensor]> = [[t.sigma / s0.sigma, lastSample], [tCoef, thisModelOutput]];
    others.forEach(({ rk, m }, k) => {
      const c = (-t.alpha * bH * (rhosC[k] as number)) / rk;
      terms.push([c, m]);
      m0Coef -= c;
    });
    terms.push([m0Coef, m0]);
    return linearCombination(terms);
  }

  /**
   * One multistep UniPC update: corrects the incoming sample with the new model output (UniC), then
   * predicts the next sample (UniP). Returns a new tensor (the caller owns it); `sample` and
   * `modelOutput` are not modified or retained beyond the scheduler's own references.
   */
  step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor {
    if (this.timesteps.length === 0) throw new Error(`${NAME}: call setTimesteps() before step()`);
    if (this.stepIdx === null) this.stepIdx = this.beginIdx ?? this.indexForTimestep(timestep);
    const i = this.stepIdx;
    if (i >= this.timesteps.length) throw new Error(`${NAME}: step() called after the last timestep`);
    const c = this.config;

    const useCorrector = i > 0 && !c.disable_corrector.includes(i - 1) && this.lastSample !== null;
    const converted = keep(this.convertModelOutput(modelOutput, sample, i));
    // the scheduler keeps its own handle on the sample (a view: the caller may dispose theirs)
    let current = keep(sample.reshape(sample.shape));
    if (useCorrector) {
      const corrected = keep(this.corrector(converted, this.lastSample as Tensor, this.thisOrder));
      current.dispose();
      current = corrected;
    }

    this.modelOutputs.shift()?.dispose();
    this.modelOutputs.push(converted);

    const order = c.lower_order_final ? Math.min(c.solver_order, this.timesteps.length - i) : c.solver_order;
    this.thisOrder = Math.min(order, this.lowerOrderNums + 1);

    this.lastSample?.dispose();
    this.lastSample = current;
    const prev = this.predictor(current, this.thisOrder);

    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums += 1;
    this.stepIdx = i + 1;
    return prev;
  }
}
