// How models take their parameters: by diffusers/transformers tensor name from a WeightSource
// (lib/io's WeightSet: memory-mapped views in the stored dtype), each checked against the shape
// the config implies. Matrices stay in their stored dtype (linear widens bf16/f16 in the kernel)
// unless a compute dtype is requested; small vectors (norm weights, biases, modulation tables)
// are widened to float32 once at load. Converted copies belong to the model.
import type { DType } from '../engine/dtype.js';
import { type Device, disposeAll, keep, type Tensor } from '../engine/tensor.js';
import type { WeightSet } from '../io/weights.js';
import { chain } from './common.js';

export interface WeightSource {
  get(name: string): Tensor;
  has(name: string): boolean;
  info(name: string): { dtype: DType; shape: number[] };
  names(): string[];
}

export interface ParamOptions {
  device?: Device;
  /** dtype of the matrices (default: as stored) */
  dtype?: DType;
}

/** A checkpoint that does not match the model its config describes. */
export class WeightMismatchError extends Error {
  constructor(component: string, message: string) {
    super(`${component}: ${message}`);
    this.name = 'WeightMismatchError';
  }
}

const FLOAT_DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16'];

export class ModelParams {
  readonly device: Device;
  private readonly used = new Map<string, Tensor>();
  private readonly owned: Tensor[] = [];

  constructor(
    readonly component: string,
    private readonly source: WeightSource,
    private readonly opts: ParamOptions = {},
  ) {
    this.device = opts.device ?? 'cpu';
  }

  has(name: string): boolean {
    return this.source.has(name);
  }

  private fetch(name: string, shape: number[]): Tensor {
    const fmt = (dims: number[]) => `[${dims.join(', ')}]`;
    if (!this.source.has(name)) throw new WeightMismatchError(this.component, `weight '${name}' ${fmt(shape)} is missing from the checkpoint`);
    const info = this.source.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i]))
      throw new WeightMismatchError(this.component, `weight '${name}' has shape ${fmt(info.shape)}, the config needs ${fmt(shape)}`);
    if (!FLOAT_DTYPES.includes(info.dtype))
      throw new WeightMismatchError(this.component, `weight '${name}' is ${info.dtype}; float32, bfloat16 or float16 expected`);
    return this.source.get(name);
  }

  /** Applies the conversions in order; the result, when it is not the stored view, belongs to the model. */
  private convert(stored: Tensor, ...steps: Array<(t: Tensor) => Tensor>): Tensor {
    const t = chain(stored, ...steps);
    if (t !== stored) this.owned.push(keep(t));
    return t;
  }

  private onDevice(t: Tensor): Tensor {
    return this.device === 'cpu' ? t : t.toDevice(this.device);
  }

  /** Records what the model uses for a checkpoint tensor. */
  private take(name: string, t: Tensor): Tensor {
    this.used.set(name, t);
    return t;
  }

  /** The tensor the model took for a checkpoint name (as converted for its use). */
  taken(name: string): Tensor {
    const t = this.used.get(name);
    if (!t) throw new WeightMismatchError(this.component, `the model has no parameter '${name}'`);
    return t;
  }

  /** Checkpoint names of every tensor the model took, in the order it took them. */
  takenNames(): string[] {
    return [...this.used.keys()];
  }

  /** A projection/embedding matrix of the given shape, viewed as viewShape, in the compute dtype, on the device. */
  matrix(name: string, shape: number[], viewShape: number[] = shape): Tensor {
    const dtype = this.opts.dtype;
    return this.take(name, this.convert(
      this.fetch(name, shape),
      (t) => (dtype && t.dtype !== dtype ? t.to(dtype) : t),
      (t) => (viewShape === shape ? t : t.reshape(viewShape)),
      (t) => this.onDevice(t),
    ));
  }

  /** A small parameter (bias, norm weight, modulation table) of the given shape, viewed as viewShape, as float32, on the device. */
  vector(name: string, shape: number[], viewShape: number[] = shape): Tensor {
    return this.take(name, this.convert(
      this.fetch(name, shape),
      (t) => t.to('float32'),
      (t) => (viewShape === shape ? t : t.reshape(viewShape)),
      (t) => this.onDevice(t),
    ));
  }

  /** Throws when the checkpoint holds tensors the model did not take (a config/weights mismatch). */
  checkAllUsed(): void {
    const extra = this.source.names().filter((n) => !this.used.has(n));
    if (extra.length > 0)
      throw new WeightMismatchError(
        this.component,
        `the checkpoint holds ${extra.length} tensor(s) this config does not use: ${extra.slice(0, 5).join(', ')}${extra.length > 5 ? ', ...' : ''}`,
      );
  }

  /** Frees the converted copies (the stored views belong to the WeightSource). */
  dispose(): void {
    disposeAll(this.owned);
    this.owned.length = 0;
  }
}

/**
 * A model over checkpoint weights whose parameters LoRA adapters may target: what the forward pass
 * uses, by checkpoint name, and, when the model loaded them itself, the mapped weights it owns.
 */
export abstract class CheckpointModel {
  protected constructor(
    protected readonly params: ModelParams,
    private readonly weights: WeightSet | null,
  ) {}

  /**
   * The tensor the forward pass uses for a checkpoint weight (diffusers name): the mapped view itself
   * for matrices kept in their stored dtype, so LoRA merging can write into it; float32 copies for
   * small vectors.
   */
  parameter(name: string): Tensor {
    return this.params.taken(name);
  }

  /** Names of every checkpoint weight the forward uses (each valid for parameter()). */
  parameterNames(): string[] {
    return this.params.takenNames();
  }

  /** Frees the converted parameters and, when the model loaded them, the mapped weights. */
  dispose(): void {
    this.params.dispose();
    this.weights?.dispose();
  }
}
