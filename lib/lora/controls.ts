// The weight-management operations a worker process answers for the server (LoRA set / merge /
// unmerge / list / restore, weight checksums), over the pipeline it owns. Every operation that changes
// weights also returns the `lora.restore` call that rebuilds the resulting state, which the runtime
// replays into a restarted worker.
import type { Pipeline } from '../pipelines/types.js';
import type { HubOptions } from '../io/hub/settings.js';
import { LoraManager, type LoraSnapshot, pipelineLoraTargets } from './manager.js';
import { checkMergeArgs, LoraError, mergeMessage, setLoraMessage, type SetLoraArgs, unmergeMessage } from './request.js';

/** A LoRA to set when the model is loaded (--lora-path / --lora-nickname / --lora-scale). */
export interface StartupLora {
  path: string;
  nickname: string;
  strength: number;
}

export interface ControlOutcome {
  result: unknown;
  /** the operation that rebuilds the state this one left (keyed: a later one with the same key replaces it) */
  replay?: { key: string; op: string; args: unknown };
}

function asObject(args: unknown, op: string): Record<string, unknown> {
  if (args === undefined || args === null) return {};
  if (typeof args !== 'object' || Array.isArray(args)) throw new LoraError(`${op}: the arguments must be an object`);
  return args as Record<string, unknown>;
}

export class WeightControls {
  readonly lora: LoraManager;

  constructor(pipeline: Pipeline, opts: { maxLoras?: number; hub?: HubOptions } = {}) {
    this.lora = new LoraManager(pipelineLoraTargets(pipeline), opts);
  }

  async startup(s: StartupLora): Promise<void> {
    await this.lora.setLora({ lora_nickname: s.nickname, lora_path: s.path, strength: s.strength });
  }

  private replay(): ControlOutcome['replay'] {
    return { key: 'lora', op: 'lora.restore', args: this.lora.snapshot() };
  }

  /** Runs one operation; LoraError for requests that cannot be served (nothing changed). */
  async run(op: string, args: unknown): Promise<ControlOutcome> {
    switch (op) {
      case 'lora.set': {
        const a = asObject(args, op) as unknown as SetLoraArgs;
        await this.lora.setLora(a);
        return { result: { status: 'ok', message: setLoraMessage(a) }, replay: this.replay() };
      }
      case 'lora.merge': {
        const { target, strength } = checkMergeArgs(asObject(args, op) as { target?: string; strength?: number | null });
        await this.lora.mergeLora(target, strength);
        return { result: { status: 'ok', message: mergeMessage(target, strength) }, replay: this.replay() };
      }
      case 'lora.unmerge': {
        const { target } = checkMergeArgs(asObject(args, op) as { target?: string });
        await this.lora.unmergeLora(target);
        return { result: { status: 'ok', message: unmergeMessage(target) }, replay: this.replay() };
      }
      case 'lora.list':
        return { result: this.lora.list() };
      case 'lora.restore':
        await this.lora.restore(args as LoraSnapshot);
        return { result: { status: 'ok' }, replay: this.replay() };
      case 'weights.checksum': {
        const names = asObject(args, op).module_names;
        if (names !== undefined && names !== null && !(Array.isArray(names) && names.every((n) => typeof n === 'string')))
          throw new LoraError('module_names must be a list of strings');
        return { result: this.lora.checksums((names as string[] | null | undefined) ?? null) };
      }
      default:
        throw new Error(`unknown worker operation '${op}'`);
    }
  }

  dispose(): void {
    this.lora.dispose();
  }
}
