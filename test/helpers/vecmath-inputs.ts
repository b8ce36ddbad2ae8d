// The inputs of the vector-math kernel check (vecmath-kernel-check.ts and basic.test.ts): special
// values, then values across the activations' whole range in a length that leaves a tail for
// every vector width; softmax rows with masked (-inf) entries and a fully masked row; a small
// linear whose GELU epilogue runs on partial tiles.
import { randomArray } from './numeric.js';

export const SPECIAL = [NaN, Infinity, -Infinity, 0, -0, 1e-30, -1e-30, 0.2, -0.2, 0.19999, 9, -9, 88.72, 88.7229, 89, -87.33, -87.34, -104, 200, -200];

export function vecmathInputs() {
  const values = new Float32Array(SPECIAL.length + 1031);
  values.set(SPECIAL);
  values.set(Float32Array.from(randomArray(1031, 77, -12, 12)), SPECIAL.length);
  const rows = 6, cols = 37;
  const logits = Float32Array.from(randomArray(rows * cols, 78, -30, 30));
  for (let j = 0; j < cols; j += 3) logits[2 * cols + j] = -Infinity;
  logits.fill(-Infinity, 4 * cols, 5 * cols);
  const m = 5, k = 19, n = 37;
  const linear = {
    m, k, n,
    x: Float32Array.from(randomArray(m * k, 79, -2, 2)),
    w: Float32Array.from(randomArray(n * k, 80, -1, 1)),
    bias: Float32Array.from(randomArray(n, 81, -1, 1)),
  };
  return { values, rows, cols, logits, linear };
}
