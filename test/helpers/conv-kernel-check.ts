// Child-process check run by nn.test.ts with ND_GEMM_KERNEL set: convolutions whose tiles hit
// every edge of the micro-kernel blocking (partial MR rows and NR columns, several K slices and
// position blocks) through whichever micro-kernel the variable selects; prints a JSON report.
import * as E from '../../lib/engine/index.js';
import { native } from '../../lib/engine/native.js';
import { type ConvCase, runConv } from './nn-ref.js';
import { relL2 } from './numeric.js';

const kernelName = (native as unknown as { gemmKernelName(): string }).gemmKernelName();
const cases: ConvCase[] = [
  { name: 'odd channels, two K slices', x: [1, 31, 9, 13], w: [29, 31, 3, 3], pad: [1, 1, 1, 1], bias: true },
  { name: 'two position blocks', x: [1, 3, 61, 67], w: [5, 3, 3, 3], pad: [1, 1, 1, 1] },
  { name: 'causal 3-D, strided, grouped', x: [2, 6, 4, 9, 11], w: [10, 3, 3, 3, 3], stride: [1, 2, 1], pad: [2, 0, 1, 1, 0, 2], groups: 2, bias: true },
  { name: 'bf16 weights, many output channels', x: [1, 8, 5, 7], w: [45, 8, 3, 3], pad: [1, 1, 1, 1], wdtype: 'bfloat16', bias: true },
  { name: 'pointwise', x: [1, 17, 6, 11], w: [19, 17, 1, 1], bias: true },
];
let maxErr = 0;
for (const c of cases) E.scope(() => {
  const { got, want } = runConv(c);
  maxErr = Math.max(maxErr, relL2(got.toFloat32(), want));
});
process.stdout.write(JSON.stringify({ kernel: kernelName, maxErr, cases: cases.length }));
