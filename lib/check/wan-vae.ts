// `vae_decode` / `vae_encode` checks of WanPipeline cases: the model folder's AutoencoderKLWan
// through lib/models/wan/vae.ts.
import { join } from 'node:path';
import { scope } from '../engine/tensor.js';
import { WanVae } from '../models/wan/vae.js';
import { type CheckContext, registerCheck } from './registry.js';

/** Runs fn with the case's VAE inside a scope (only the returned tensors survive), then frees the VAE. */
async function withVae<T>(ctx: CheckContext, fn: (vae: WanVae) => T): Promise<T> {
  const vae = await WanVae.load(join(ctx.modelDir, 'vae'), { device: ctx.device });
  try {
    return scope(() => fn(vae));
  } finally {
    vae.dispose();
  }
}

registerCheck('WanPipeline', 'vae_decode', (ctx) =>
  withVae(ctx, (vae) => ({ sample: vae.decode(ctx.inputTensor('latents').toDevice(ctx.device)) })),
);

registerCheck('WanPipeline', 'vae_encode', (ctx) =>
  withVae(ctx, (vae) => {
    const { mean, logvar } = vae.encode(ctx.inputTensor('video').toDevice(ctx.device));
    return { latent_mean: mean, latent_logvar: logvar, latents_normalized: vae.normalizeLatents(mean) };
  }),
);
