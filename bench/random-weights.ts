// Random weights held in memory for the DiT benchmarks, under the real tensor names and shapes:
// tensor i draws from the Philox stream of seed i + 1 (as the demo models' weights), initialised by
// a per-benchmark rule, and served to the model as a WeightSource.
import type { DType } from '../lib/engine/dtype.js';
import { keep, type Tensor } from '../lib/engine/tensor.js';
import type { WeightSource } from '../lib/models/weights.js';
import { type Init, randomWeights, type TensorShapes } from '../lib/pipelines/demo/weights.js';

export function inMemoryWeights(
  shapes: TensorShapes,
  dtype: DType,
  init: (name: string, shape: number[]) => Init,
): { source: WeightSource; tensors: Map<string, Tensor> } {
  const tensors = new Map(Object.entries(randomWeights(shapes, 1, dtype, init)).map(([name, t]) => [name, keep(t)]));
  const source: WeightSource = {
    get: (n) => tensors.get(n)!,
    has: (n) => tensors.has(n),
    info: (n) => ({ dtype: tensors.get(n)!.dtype, shape: tensors.get(n)!.shape }),
    names: () => [...tensors.keys()],
  };
  return { source, tensors };
}
