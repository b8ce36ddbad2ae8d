// JSON shapes of the API's objects.
import type { PipelineInfo } from '../pipelines/types.js';
import type { JobRecord } from '../runtime/store.js';

/** The upstream server's /models object. */
export function modelInfo(info: PipelineInfo, numGpus: number) {
  return {
    model_path: info.modelPath,
    task_type: info.taskType,
    pipeline_name: info.pipelineName,
    pipeline_class: info.pipelineClass,
    num_gpus: numGpus,
    dit_precision: info.ditPrecision,
    vae_precision: info.vaePrecision,
  };
}

/** An OpenAI model card with the fields of /models. */
export function modelCard(info: PipelineInfo, numGpus: number, created: number) {
  return {
    id: info.modelPath,
    object: 'model' as const,
    created,
    owned_by: 'node-diffusion',
    root: info.modelPath,
    parent: null,
    ...modelInfo(info, numGpus),
  };
}

/** Duration in seconds as a short decimal string ("5", "0.31"). */
export function formatSeconds(numFrames: number, fps: number): string {
  if (!(fps > 0)) return '0';
  return String(Math.round((numFrames / fps) * 100) / 100);
}

/** The OpenAI video object, plus the upstream server's timing fields and the resolved generation settings. */
export function videoObject(job: JobRecord) {
  const g = job.params.generation;
  return {
    id: job.id,
    object: 'video' as const,
    model: job.model,
    status: job.status,
    progress: job.progress,
    created_at: job.createdAt,
    completed_at: job.status === 'completed' ? job.completedAt : null,
    expires_at: job.expiresAt,
    prompt: job.prompt,
    seconds: formatSeconds(g.numFrames, g.fps),
    size: `${g.width}x${g.height}`,
    remixed_from_video_id: job.remixedFrom,
    error: job.error ? { code: job.error.code, message: job.error.message } : null,
    inference_time_s: job.inferenceTimeS,
    peak_memory_mb: job.peakMemoryMb,
    /** jobs that ran in one pipeline batch with this one, itself included (request batching) */
    batch_size: job.batchSize,
    num_frames: g.numFrames,
    fps: g.fps,
    seed: g.seed,
    num_inference_steps: g.numInferenceSteps,
  };
}
