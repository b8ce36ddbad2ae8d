// --lora-path / --lora-nickname / --lora-scale, shared by `serve` and `generate`.
import type { StartupLora } from '../lora/controls.js';
import { type FlagValue, UsageError } from './flags.js';

/** --lora-path with --lora-nickname and --lora-scale, or null (the other two need the path). */
export function loraFlags(v: Record<string, FlagValue>): StartupLora | null {
  const path = v['lora-path'] as string | undefined;
  if (path === undefined || path === '') {
    for (const flag of ['lora-nickname', 'lora-scale']) if (v[flag] !== undefined) throw new UsageError(`--${flag} needs --lora-path`);
    return null;
  }
  const nickname = (v['lora-nickname'] as string | undefined) ?? 'default';
  if (nickname.trim() === '') throw new UsageError('--lora-nickname must not be empty');
  return { path, nickname, strength: (v['lora-scale'] as number | undefined) ?? 1 };
}
