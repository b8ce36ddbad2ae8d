// How the FLUX.2 pipelines lay latents and text out as transformer tokens (pipeline_flux2_klein.py):
// patchified latents [B, C, h, w] are packed row-major into [B, h*w, C]; every token carries a 4-axis
// position id (t, h, w, l): noisy latents (0, y, x, 0), reference image i (10 + 10i, y, x, 0), text
// token j (0, 0, 0, j).
import { type Tensor } from '../../engine/tensor.js';
import { FLUX2_POSITION_AXES } from './transformer.js';

/** The time coordinate step between reference images (_prepare_image_ids scale): image i sits at t = 10 (i + 1). */
export const FLUX2_REFERENCE_TIME_SCALE = 10;

/** _pack_latents: [B, C, h, w] -> [B, h*w, C]. */
export function packLatents(x: Tensor): Tensor {
  if (x.ndim !== 4) throw new RangeError(`latents to pack must be [B, C, h, w], got [${x.shape}]`);
  const [b, c, h, w] = x.shape as [number, number, number, number];
  return x.reshape(b, c, h * w).permute(0, 2, 1).contiguous();
}

/**
 * _unpack_latents_with_ids for the noisy latents' ids (the row-major grid, so the scatter is the
 * inverse of packLatents): [B, h*w, C] -> [B, C, h, w].
 */
export function unpackLatents(x: Tensor, h: number, w: number): Tensor {
  if (x.ndim !== 3 || x.size(1) !== h * w) throw new RangeError(`packed latents must be [B, ${h * w}, C] for a ${h}x${w} grid, got [${x.shape}]`);
  const [b, , c] = x.shape as [number, number, number];
  return x.permute(0, 2, 1).reshape(b, c, h, w);
}

/** The ids of an h x w grid of tokens at time t, row-major: (t, y, x, 0). */
function gridIds(t: number, h: number, w: number): Int32Array {
  const ids = new Int32Array(h * w * FLUX2_POSITION_AXES);
  let at = 0;
  for (let y = 0; y < h; ++y)
    for (let x = 0; x < w; ++x) {
      ids[at] = t;
      ids[at + 1] = y;
      ids[at + 2] = x;
      at += FLUX2_POSITION_AXES;
    }
  return ids;
}

/** _prepare_latent_ids: (0, y, x, 0) over the packed h x w latent grid. */
export function latentIds(h: number, w: number): Int32Array {
  return gridIds(0, h, w);
}

/** _prepare_image_ids: the grids of the reference latents, image i at t = 10 (i + 1), concatenated. */
export function referenceIds(grids: Array<[h: number, w: number]>): Int32Array {
  const parts = grids.map(([h, w], i) => gridIds(FLUX2_REFERENCE_TIME_SCALE * (i + 1), h, w));
  return concatIds(parts);
}

/** _prepare_text_ids: (0, 0, 0, j) for text tokens j = 0..length-1. */
export function textIds(length: number): Int32Array {
  const ids = new Int32Array(length * FLUX2_POSITION_AXES);
  for (let j = 0; j < length; ++j) ids[j * FLUX2_POSITION_AXES + 3] = j;
  return ids;
}

export function concatIds(parts: Int32Array[]): Int32Array {
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
