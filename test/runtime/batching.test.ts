// Which queued jobs share a pipeline batch (takeBatch, batchKey), and how the worker turns validated
// requests into one batched request (batchRequest: prompts per output, per-item seeds) and splits its
// outputs back (splitOutputs).
import t from 'tap';

import type { GenerateRequest, GenerateResult, RgbImage } from '../../lib/pipelines/types.js';
import { batchKey, batchRequest, defaultMaxBatchSize, splitOutputs, takeBatch } from '../../lib/runtime/batching.js';
import type { GenerationParams, JobKind } from '../../lib/runtime/protocol.js';

const G: GenerationParams = {
  prompt: 'p',
  width: 32,
  height: 32,
  numFrames: 1,
  fps: 0,
  numInferenceSteps: 2,
  guidanceScale: 0,
  seed: 1,
  numOutputs: 1,
  inputImages: 0,
};

let seq = 0;
const job = (name: string, g: Partial<GenerationParams> = {}, kind: JobKind | 'probe' = 'image') => ({
  name,
  kind,
  params: { generation: { ...G, ...g } },
  seq: ++seq,
});
const names = (jobs: Array<{ name: string }>) => jobs.map((j) => j.name);

t.test('takeBatch: the head and the compatible jobs right behind it, FIFO, up to the output items and the next weight operation', async (t) => {
  const q = [job('a'), job('b', { prompt: 'other', seed: 9, numOutputs: 2, fps: 8 }), job('c'), job('d'), job('e')];
  t.same(names(takeBatch(q, 4, Infinity)), ['a', 'b', 'c'], 'prompt, seed, n and fps may differ; at most 4 output items (1 + 2 + 1)');
  t.same(names(q), ['d', 'e']);
  t.same(names(takeBatch(q, 1, Infinity)), ['d'], 'size 1: no batching');
  t.same(names(takeBatch([], 4, Infinity)), []);
  const wide = [job('a'), job('n3', { numOutputs: 3 }), job('n4', { numOutputs: 4 }), job('b')];
  t.same(names(takeBatch(wide, 3, Infinity)), ['a'], 'a job that would take the batch past the item limit waits for the next batch');
  t.same(names(takeBatch(wide, 3, Infinity)), ['n3'], 'a job of exactly the limit runs alone');
  t.same(names(takeBatch(wide, 3, Infinity)), ['n4'], 'a job with more outputs than the limit still runs, alone');
  t.same(names(wide), ['b']);

  for (const [what, patch] of [
    ['size', { width: 48 }],
    ['frames', { numFrames: 5 }],
    ['steps', { numInferenceSteps: 3 }],
    ['guidance', { guidanceScale: 2 }],
    ['negative prompt', { negativePrompt: 'blurry' }],
    ['input images', { inputImages: 1 }],
  ] as Array<[string, Partial<GenerationParams>]>) {
    const queue = [job('a'), job('x', patch), job('b')];
    t.same(names(takeBatch(queue, 4, Infinity)), ['a'], `another ${what} ends the batch`);
    t.same(names(queue), ['x', 'b'], 'and nothing overtakes it');
  }
  const kinds = [job('v', {}, 'video'), job('i')];
  t.same(names(takeBatch(kinds, 4, Infinity)), ['v'], 'videos and images never share a batch');
  const edits = [job('e1', { inputImages: 1 }), job('e2', { inputImages: 1 })];
  t.same(names(takeBatch(edits, 4, Infinity)), ['e1'], 'edits never batch');
  const probe = [job('probe', {}, 'probe'), job('i')];
  t.same(names(takeBatch(probe, 4, Infinity)), ['probe'], 'the health probe runs alone');

  const barrier = [job('a'), job('b')];
  const weightOp = ++seq;
  barrier.push(job('c'));
  t.same(names(takeBatch(barrier, 4, weightOp)), ['a', 'b'], 'no batch crosses a queued weight operation');
  t.same(names(barrier), ['c']);
  t.equal(batchKey('image', { ...G, width: null }), null, 'an unresolved size (an edit) never batches');
});

t.test('defaultMaxBatchSize: 4 on CUDA, 1 (off) on the CPU', async (t) => {
  t.same([defaultMaxBatchSize('cuda'), defaultMaxBatchSize('cuda:1'), defaultMaxBatchSize('cpu')], [4, 4, 1]);
});

t.test('batchRequest and splitOutputs: prompts per output, one seed per item, outputs back per request', async (t) => {
  const base = { width: 32, height: 32, numInferenceSteps: 2, guidanceScale: 0, negativePrompt: '', outputType: 'rgb' } as const;
  const a: GenerateRequest = { ...base, prompt: ['fox'], numOutputs: 2, seed: 7, seeds: [7, 8] };
  const b: GenerateRequest = { ...base, prompt: ['boat'], numOutputs: 1, seed: 100, seeds: [100] };
  t.equal(batchRequest([a]), a, 'a single request as it is');
  t.match(batchRequest([a, b]), { ...base, prompt: ['fox', 'fox', 'boat'], numOutputs: 1, seeds: [7, 8, 100] });
  const img = (v: number): RgbImage[] => [{ width: 1, height: 1, data: new Uint8Array([v, v, v]) }];
  const result = { outputs: [img(1), img(2), img(3)] } as GenerateResult;
  t.same(splitOutputs([a, b], result), [[img(1), img(2)], [img(3)]]);
});
