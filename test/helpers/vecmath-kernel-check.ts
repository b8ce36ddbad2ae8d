// Child-process check run by basic.test.ts with ND_VEC_KERNEL set: the activations, softmax and
// a linear with a fused GELU epilogue through whichever vector-math kernel the variable selects,
// on rows of every tail length and on special values. Prints a JSON report on stdout: the
// kernel's name and each output's float32 bits (base64), so that the parent can compare kernels
// bit for bit and against float64 references.
import * as E from '../../lib/engine/index.js';
import { native } from '../../lib/engine/native.js';
import { vecmathInputs } from './vecmath-inputs.js';

const { values, rows, cols, logits, linear } = vecmathInputs();
const x = E.tensor(values, [values.length]);
const bits = (t: E.Tensor) => Buffer.from(t.toFloat32().buffer).toString('base64');
const outputs: Record<string, string> = {
  exp: bits(E.exp(x)),
  tanh: bits(E.tanh(x)),
  sigmoid: bits(E.sigmoid(x)),
  silu: bits(E.silu(x)),
  geluTanh: bits(E.geluTanh(x)),
  gelu: bits(E.gelu(x)),
  softmax: bits(E.softmax(E.tensor(logits, [rows, cols]), -1)),
  linearGelu: bits(
    E.linear(E.tensor(linear.x, [linear.m, linear.k]), E.tensor(linear.w, [linear.n, linear.k]), E.tensor(linear.bias, [linear.n]), 'gelu'),
  ),
};
process.stdout.write(JSON.stringify({ kernel: native.vecKernelName(), outputs }));
