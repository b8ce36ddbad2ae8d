// Request batching: which queued jobs may run as one pipeline batch, and how the worker turns such
// jobs into one pipeline request and its result back into each job's outputs.
import type { GenerateRequest, GenerateResult } from '../pipelines/types.js';
import type { GenerationParams, JobKind } from './protocol.js';

/** --max-batch-size when not given: batching pays on an accelerator; on the CPU a batch only delays its first job. */
export function defaultMaxBatchSize(device: string): number {
  return device.startsWith('cuda') ? 4 : 1;
}

/**
 * What must agree for jobs to share a batch: kind, size, frame count, steps, guidance scale and
 * negative prompt (the server serves one model, so the model always agrees). null for jobs that
 * never batch: the health probe, and jobs with input images (edits, image-to-video), whose
 * reference images condition the whole run.
 */
export function batchKey(kind: JobKind | 'probe', g: GenerationParams): string | null {
  if (kind === 'probe' || g.inputImages > 0 || g.width === null || g.height === null) return null;
  return JSON.stringify([kind, g.width, g.height, g.numFrames, g.numInferenceSteps, g.guidanceScale, g.negativePrompt ?? null]);
}

interface Queued {
  kind: JobKind | 'probe';
  params: { generation: GenerationParams };
  /** position in the order of jobs and weight operations */
  seq: number;
}

/**
 * Takes the next batch off the head of `queue` (FIFO): the first job, then each following job while
 * it is compatible with the first, comes before `barrierSeq` (the next weight operation: a batch never
 * runs a job across a weight change) and keeps the batch at `maxItems` output items or fewer (a job
 * with more outputs than that still runs, alone: the limit bounds what batching adds to a run's
 * memory). An incompatible job ends the batch (no job overtakes another). Empty when the queue is.
 */
export function takeBatch<J extends Queued>(queue: J[], maxItems: number, barrierSeq: number): J[] {
  const first = queue.shift();
  if (!first) return [];
  const batch = [first];
  const key = batchKey(first.kind, first.params.generation);
  if (key === null) return batch;
  let items = first.params.generation.numOutputs;
  for (;;) {
    const next = queue[0];
    if (!next || next.seq > barrierSeq || batchKey(next.kind, next.params.generation) !== key) break;
    if (items + next.params.generation.numOutputs > maxItems) break;
    items += next.params.generation.numOutputs;
    batch.push(queue.shift() as J);
  }
  return batch;
}

/**
 * One pipeline request for validated requests that agree on everything but prompt, seed and output
 * count: each request's prompt repeated per output, numOutputs 1, and per-item seeds, so item j of
 * request r draws the noise it would draw alone. A single request is returned as it is.
 */
export function batchRequest(requests: GenerateRequest[]): GenerateRequest {
  const [first] = requests as [GenerateRequest];
  if (requests.length === 1) return first;
  const prompt: string[] = [];
  const seeds: number[] = [];
  for (const r of requests) {
    const prompts = r.prompt as string[];
    const n = r.numOutputs as number;
    for (const p of prompts) for (let k = 0; k < n; ++k) prompt.push(p);
    seeds.push(...(r.seeds as number[]));
  }
  return { ...first, prompt, numOutputs: 1, seeds };
}

/** The number of output items of a validated request. */
export function itemCount(r: GenerateRequest): number {
  return (r.prompt as string[]).length * (r.numOutputs as number);
}

/** Each request's share of a batched result's outputs, in request order. */
export function splitOutputs(requests: GenerateRequest[], result: GenerateResult): GenerateResult['outputs'][] {
  let at = 0;
  return requests.map((r) => {
    const n = itemCount(r);
    const mine = result.outputs.slice(at, at + n);
    at += n;
    return mine;
  });
}
