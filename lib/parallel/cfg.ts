// CFG-parallel: the conditional branch runs on CFG rank 0 and the unconditional one on CFG rank 1;
// one all-gather brings both predictions to both ranks, which combine them as the single-rank
// pipeline does (same operations, same bits).
import { add, mul, sub } from '../engine/ops/basic.js';
import { scope, type Tensor } from '../engine/tensor.js';
import type { Communicator } from './communicator.js';

/** uncond + scale * (cond - uncond) from this rank's prediction (cond on member 0, uncond on member 1). */
export function combineGuidance(cfg: Communicator, prediction: Tensor, scale: number): Tensor {
  if (cfg.size !== 2) throw new Error(`CFG-parallel needs a group of 2 ranks, got ${cfg.size}`);
  return scope(() => {
    const both = cfg.allGather(prediction.unsqueeze(0), 0);
    const cond = both.select(0, 0);
    const uncond = both.select(0, 1);
    return add(uncond, mul(sub(cond, uncond), scale));
  });
}
