// Elementwise math, reductions, softmax, concat and pad (csrc/core/ops_basic.cpp).
import { isFloat } from '../dtype.js';
import { native } from '../native.js';
import { Tensor } from '../tensor.js';

const UNARY = {
  neg: 0, abs: 1, exp: 2, log: 3, sqrt: 4, rsqrt: 5, sin: 6, cos: 7, tanh: 8, sigmoid: 9, silu: 10,
  geluErf: 11, geluTanh: 12, relu: 13, square: 14, reciprocal: 15,
} as const;
const BINARY = { add: 0, sub: 1, mul: 2, div: 3, maximum: 4, minimum: 5, pow: 6 } as const;
const REDUCE = { sum: 0, mean: 1, max: 2, min: 3 } as const;

const un = (op: number) => (x: Tensor): Tensor => new Tensor(native.unary(op, x.handle));

export const neg = un(UNARY.neg);
export const abs = un(UNARY.abs);
export const exp = un(UNARY.exp);
export const log = un(UNARY.log);
export const sqrt = un(UNARY.sqrt);
export const rsqrt = un(UNARY.rsqrt);
export const sin = un(UNARY.sin);
export const cos = un(UNARY.cos);
export const tanh = un(UNARY.tanh);
export const sigmoid = un(UNARY.sigmoid);
export const silu = un(UNARY.silu);
/** GELU with the exact erf form. */
export const gelu = un(UNARY.geluErf);
/** GELU with the tanh approximation (gelu_pytorch_tanh / gelu_new). */
export const geluTanh = un(UNARY.geluTanh);
export const relu = un(UNARY.relu);
export const square = un(UNARY.square);
export const reciprocal = un(UNARY.reciprocal);

function bin(op: number, a: Tensor, b: Tensor): Tensor {
  return new Tensor(native.binary(op, a.handle, b.handle));
}

/** a + b (b may be a number); broadcasting. */
export function add(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? new Tensor(native.affine(a.handle, 1, b)) : bin(BINARY.add, a, b);
}
export function sub(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? new Tensor(native.affine(a.handle, 1, -b)) : bin(BINARY.sub, a, b);
}
export function mul(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? new Tensor(native.affine(a.handle, b, 0)) : bin(BINARY.mul, a, b);
}
/**
 * a / b (true division: integer tensors give float32, as torch). Dividing by a number multiplies by
 * 1 / b (within an ulp of a division).
 */
export function div(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b !== 'number') return bin(BINARY.div, a, b);
  if (isFloat(a.dtype)) return new Tensor(native.affine(a.handle, 1 / b, 0));
  const f = a.to('float32');
  try {
    return new Tensor(native.affine(f.handle, 1 / b, 0));
  } finally {
    f.dispose();
  }
}
export function maximum(a: Tensor, b: Tensor): Tensor {
  return bin(BINARY.maximum, a, b);
}
export function minimum(a: Tensor, b: Tensor): Tensor {
  return bin(BINARY.minimum, a, b);
}
/** a ** b, b a tensor or a number. */
export function pow(a: Tensor, b: Tensor | number): Tensor {
  return typeof b === 'number' ? new Tensor(native.powScalar(a.handle, b)) : bin(BINARY.pow, a, b);
}
/** x * mul + add in one pass (an integer x gives float32 when mul or add is fractional, as torch). */
export function affine(x: Tensor, mul: number, add: number): Tensor {
  return new Tensor(native.affine(x.handle, mul, add));
}
export function clamp(x: Tensor, min: number, max: number): Tensor {
  return new Tensor(native.clamp(x.handle, min, max));
}

export function sum(x: Tensor, dim: number, keepdim = false): Tensor {
  return new Tensor(native.reduce(REDUCE.sum, x.handle, dim, keepdim));
}
export function mean(x: Tensor, dim: number, keepdim = false): Tensor {
  return new Tensor(native.reduce(REDUCE.mean, x.handle, dim, keepdim));
}
export function max(x: Tensor, dim: number, keepdim = false): Tensor {
  return new Tensor(native.reduce(REDUCE.max, x.handle, dim, keepdim));
}
export function min(x: Tensor, dim: number, keepdim = false): Tensor {
  return new Tensor(native.reduce(REDUCE.min, x.handle, dim, keepdim));
}
export function softmax(x: Tensor, dim = -1): Tensor {
  return new Tensor(native.softmax(x.handle, dim));
}

export function concat(xs: Tensor[], dim = 0): Tensor {
  return new Tensor(native.concat(xs.map((x) => x.handle), dim));
}
/** Stacks same-shaped tensors along a new dim. */
export function stack(xs: Tensor[], dim = 0): Tensor {
  return concat(xs.map((x) => x.unsqueeze(dim)), dim);
}
/** Constant padding in torch F.pad order: [lastLo, lastHi, secondLastLo, secondLastHi, ...]. */
export function pad(x: Tensor, pads: number[], value = 0): Tensor {
  return new Tensor(native.pad(x.handle, pads, value));
}
