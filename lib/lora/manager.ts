// LoraManager: the LoRA adapters of one pipeline. Adapters are read once into memory and cached by
// nickname (least recently used evicted beyond maxLoras, never one in use); set_lora replaces the
// active set of a module and merges W = W_base + sum_i strength_i * scale_i * B_i A_i into a copy
// of each changed weight, which the model then uses in place of its base tensor (swapContents: the
// base tensor, often a view of the memory-mapped checkpoint, is never written). Unmerging swaps the
// base tensors back, so the base weights are restored bit for bit by construction.
//
// Everything that can fail (lists, targets, files, key names, shapes) is checked before any weight
// changes: a failed request leaves the weights and the active sets as they were.
import { createHash } from 'node:crypto';

import { loraMerge, type LoraDelta } from '../engine/ops/linalg.js';
import { empty, keep, scope, swapContents, type Tensor } from '../engine/tensor.js';
import { type LoraTargetLayout, resolveLora, type ResolvedLora, targetLayout, type LoraStateDict } from './formats.js';
import { LoraError, type LoraTarget, planSetLora, type SetLoraArgs, type SetLoraPlan } from './request.js';
import type { HubOptions } from '../io/hub/settings.js';
import { fetchLoraFromHub } from './hub.js';
import { disposeStateDict, localLoraFile, looksLikeRepoId, readLoraFile } from './source.js';

/** A denoiser LoRA can change: its weights by checkpoint name, as the forward uses them. */
export interface LoraTargetModel {
  parameter(name: string): Tensor;
  parameterNames(): string[];
}

export interface LoraManagerOptions {
  /** adapters kept in memory (least recently used evicted first; active ones never); default 8 */
  maxLoras?: number;
  /** brings a Hugging Face repo id's adapter into the local cache and returns the file (default: fetchLoraFromHub) */
  fetchRemote?: (repoId: string) => Promise<string>;
  /** hub settings for the default fetchRemote (revision, token, cache folder, endpoint, offline) */
  hub?: HubOptions;
}

export const DEFAULT_MAX_LORAS = 8;

interface Adapter {
  nickname: string;
  /** lora_path as given (file, folder or repo id) */
  path: string;
  sd: LoraStateDict;
  /** the file matched against each target module it was set on */
  resolved: Map<string, ResolvedLora>;
  lastUsed: number;
}

interface ActiveAdapter {
  adapter: Adapter;
  strength: number;
}

interface TargetState {
  name: string;
  model: LoraTargetModel;
  layout: LoraTargetLayout | null;
  active: ActiveAdapter[];
  merged: boolean;
  /** parameter name -> the tensor object holding the base weight while the model uses a merged copy */
  bases: Map<string, Tensor>;
}

export interface LoraListing {
  loaded_adapters: Array<{ nickname: string; path: string }>;
  active: Record<string, Array<{ nickname: string; path: string; merged: boolean; strength: number }>>;
}

/** What set_lora calls reproduce the active sets and merge states (restoring a restarted worker). */
export interface LoraSnapshot {
  targets: Record<string, { adapters: Array<{ nickname: string; path: string; strength: number }>; merged: boolean }>;
}

export interface LoraStats {
  /** adapter files read (a cached adapter costs none) */
  fileReads: number;
  /** milliseconds the last merge of each module took */
  lastMergeMs: Record<string, number>;
}

/** sha256 of a model's weights as its forward uses them: every parameter, in name order, with its name, dtype and shape. */
export function weightsChecksum(model: LoraTargetModel): string {
  const hash = createHash('sha256');
  for (const name of [...model.parameterNames()].sort()) {
    const t = model.parameter(name);
    hash.update(`${name}\u0000${t.dtype}\u0000${t.shape.join(',')}\u0000`);
    hash.update(t.bytes());
  }
  return hash.digest('hex');
}

export class LoraManager {
  readonly maxLoras: number;
  readonly stats: LoraStats = { fileReads: 0, lastMergeMs: {} };
  private readonly targetStates = new Map<string, TargetState>();
  private readonly cache = new Map<string, Adapter>();
  private readonly fetchRemote: (repoId: string) => Promise<string>;
  private tick = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private disposed = false;

  /** targets: module name (transformer, transformer_2, critic) -> its model */
  constructor(targets: Record<string, LoraTargetModel>, opts: LoraManagerOptions = {}) {
    this.maxLoras = opts.maxLoras ?? DEFAULT_MAX_LORAS;
    if (!Number.isInteger(this.maxLoras) || this.maxLoras < 1) throw new RangeError(`maxLoras must be a positive integer, got ${opts.maxLoras}`);
    this.fetchRemote = opts.fetchRemote ?? ((id) => fetchLoraFromHub(id, opts.hub));
    for (const [name, model] of Object.entries(targets))
      this.targetStates.set(name, { name, model, layout: null, active: [], merged: false, bases: new Map() });
  }

  /** The modules LoRA can target in this model. */
  get targets(): string[] {
    return [...this.targetStates.keys()];
  }

  /** Runs mutations one at a time, in call order. */
  private exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const run = this.chain.then(() => {
      if (this.disposed) throw new Error('the LoRA manager was disposed');
      return fn();
    });
    this.chain = run.catch(() => {});
    return run;
  }

  private layoutOf(st: TargetState): LoraTargetLayout {
    st.layout ??= targetLayout(st.model.constructor.name, st.model);
    return st.layout;
  }

  /** The modules a target names ('all': every one), or a LoraError when the model lacks it. */
  private statesFor(target: LoraTarget | string): TargetState[] {
    if (this.targetStates.size === 0) throw new LoraError('LoRA is not enabled for this model: it has no module LoRA can target');
    if (target === 'all') return [...this.targetStates.values()];
    const st = this.targetStates.get(target);
    if (!st) throw new LoraError(`target '${target}' is not a module of this model (LoRA targets: ${this.targets.join(', ')})`);
    return [st];
  }

  private async readAdapter(nickname: string, path: string): Promise<Adapter> {
    let file = await localLoraFile(path);
    if (file === null) {
      if (!looksLikeRepoId(path)) throw new LoraError(`lora_path '${path}' is not an existing file or folder, nor a Hugging Face repo id (org/name)`);
      file = await this.fetchRemote(path);
    }
    const sd = readLoraFile(file, path);
    this.stats.fileReads++;
    return { nickname, path, sd, resolved: new Map(), lastUsed: 0 };
  }

  private disposeAdapter(a: Adapter): void {
    for (const r of a.resolved.values()) r.dispose();
    a.resolved.clear();
    disposeStateDict(a.sd);
  }

  private isActive(a: Adapter): boolean {
    for (const st of this.targetStates.values()) if (st.active.some((x) => x.adapter === a)) return true;
    return false;
  }

  /** Frees an adapter that is neither cached nor active any more. */
  private release(a: Adapter): void {
    if (this.cache.get(a.nickname) !== a && !this.isActive(a)) this.disposeAdapter(a);
  }

  /** Evicts least recently used adapters not in use until at most maxLoras are cached. */
  private evict(): void {
    while (this.cache.size > this.maxLoras) {
      const idle = [...this.cache.values()].filter((a) => !this.isActive(a)).sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (!idle) return;
      this.cache.delete(idle.nickname);
      this.disposeAdapter(idle);
    }
  }

  /**
   * Sets the active adapters of the targeted modules (replacing what they had) and merges them from
   * the base weights. lora_path may be omitted (or null) for an adapter cached under that nickname;
   * a cached nickname with the same path is not read again, a new path replaces it.
   */
  async setLora(args: SetLoraArgs | SetLoraPlan): Promise<void> {
    const plan = 'nicknames' in args ? args : planSetLora(args);
    return this.exclusive(() => this.applySet(plan));
  }

  private async applySet(plan: SetLoraPlan): Promise<void> {
    // 1. targets and limits
    const perTarget = new Map<TargetState, number[]>();
    plan.nicknames.forEach((_, i) => {
      for (const st of this.statesFor(plan.targets[i]!)) {
        const list = perTarget.get(st) ?? [];
        list.push(i);
        perTarget.set(st, list);
      }
    });
    if (plan.nicknames.length > this.maxLoras)
      throw new LoraError(`${plan.nicknames.length} adapters were given but at most ${this.maxLoras} can be held (--max-loras)`);

    // 2. adapters: cached or read now (staged: they join the cache only if everything succeeds)
    const staged: Adapter[] = [];
    const adapters: Adapter[] = [];
    const newResolutions: Array<[Adapter, string]> = [];
    try {
      for (let i = 0; i < plan.nicknames.length; ++i) {
        const nickname = plan.nicknames[i]!;
        const path = plan.paths[i];
        const cached = this.cache.get(nickname);
        if (path === null || path === undefined) {
          if (!cached) throw new LoraError(`LoRA adapter '${nickname}' is not loaded: give its lora_path`);
          adapters.push(cached);
        } else if (cached && cached.path === path) {
          adapters.push(cached);
        } else {
          const fresh = await this.readAdapter(nickname, path).catch((err: unknown) => {
            if (err instanceof LoraError) throw new LoraError(`LoRA '${nickname}': ${err.message}`, err.key);
            throw err;
          });
          staged.push(fresh);
          adapters.push(fresh);
        }
      }
      // 3. every adapter matched against every module it goes to
      for (const [st, indices] of perTarget) {
        for (const i of indices) {
          const a = adapters[i]!;
          if (a.resolved.has(st.name)) continue;
          try {
            a.resolved.set(st.name, resolveLora(a.sd, this.layoutOf(st)));
          } catch (err) {
            if (err instanceof LoraError) throw new LoraError(`LoRA '${a.nickname}' (${a.path}) does not fit the ${st.name}: ${err.message}`, err.key);
            throw err;
          }
          newResolutions.push([a, st.name]);
        }
      }
    } catch (err) {
      for (const [a, t] of newResolutions) {
        a.resolved.get(t)?.dispose();
        a.resolved.delete(t);
      }
      for (const a of staged) this.disposeAdapter(a);
      throw err;
    }

    // 4. commit: cache, active sets, merges
    for (const a of staged) {
      const old = this.cache.get(a.nickname);
      this.cache.set(a.nickname, a);
      if (old) this.release(old);
    }
    for (const a of adapters) a.lastUsed = ++this.tick;
    for (const [st, indices] of perTarget) {
      const previous = st.active;
      st.active = indices.map((i) => ({ adapter: adapters[i]!, strength: plan.strengths[i]! }));
      this.mergeTarget(st);
      for (const p of previous) this.release(p.adapter);
    }
    this.evict();
  }

  /** Re-merges the active adapters of the target from the base weights; with a strength, every adapter of the target takes it. */
  mergeLora(target: LoraTarget | string = 'all', strength: number | null = null): Promise<void> {
    return this.exclusive(() => {
      const states = this.statesFor(target).filter((st) => st.active.length > 0);
      if (states.length === 0) throw new LoraError(`no LoRA adapter is set on ${target === 'all' ? 'any module' : `the ${target}`}: call set_lora first`);
      if (strength !== null && !Number.isFinite(strength)) throw new LoraError(`strength must be a finite number, got ${strength}`);
      for (const st of states) {
        if (strength !== null) st.active = st.active.map((a) => ({ ...a, strength }));
        this.mergeTarget(st);
      }
    });
  }

  /** Restores the base weights of the target (bit-exact); the adapters stay set, ready to be merged again. */
  unmergeLora(target: LoraTarget | string = 'all'): Promise<void> {
    return this.exclusive(() => {
      for (const st of this.statesFor(target)) this.restoreBases(st);
    });
  }

  /** Puts every base tensor back into the model and frees the merged copies. */
  private restoreBases(st: TargetState): void {
    for (const [name, held] of st.bases) {
      const live = st.model.parameter(name);
      // a model disposed first has freed what it held (the merged copy): only the base is left to free
      if (!live.disposed) swapContents(live, held);
      held.dispose(); // now the merged copy
    }
    st.bases.clear();
    st.merged = false;
  }

  /**
   * Merges st.active into the model: each changed weight is computed from its base into a tensor the
   * model then uses (the copy made at the first merge is rewritten by later ones); weights no adapter
   * changes any more get their base back.
   */
  private mergeTarget(st: TargetState): void {
    const t0 = performance.now();
    const plan = new Map<string, LoraDelta[]>();
    for (const { adapter, strength } of st.active) {
      for (const layer of adapter.resolved.get(st.name)!.layers) {
        const name = `${layer.module}.weight`;
        const deltas = plan.get(name) ?? [];
        deltas.push({ up: layer.up, down: layer.down, scale: strength * layer.scale });
        plan.set(name, deltas);
      }
    }
    try {
      for (const [name, held] of [...st.bases]) {
        if (plan.has(name)) continue;
        swapContents(st.model.parameter(name), held);
        held.dispose();
        st.bases.delete(name);
      }
      for (const [name, deltas] of plan) {
        const live = st.model.parameter(name);
        const base = st.bases.get(name);
        if (base) {
          mergeOnDevice(base, deltas, live);
        } else {
          const merged = keep(empty(live.shape, { dtype: live.dtype, device: live.device }));
          try {
            mergeOnDevice(live, deltas, merged);
          } catch (err) {
            merged.dispose();
            throw err;
          }
          swapContents(live, merged);
          st.bases.set(name, merged); // now holds the base
        }
      }
    } catch (err) {
      this.restoreBases(st);
      throw new Error(`merging the LoRA weights of the ${st.name} failed (${(err as Error).message}); its base weights are restored`);
    }
    st.merged = true;
    this.stats.lastMergeMs[st.name] = performance.now() - t0;
  }

  /** Loaded adapters and, per module with adapters set, each adapter's state. */
  list(): LoraListing {
    const active: LoraListing['active'] = {};
    for (const st of this.targetStates.values()) {
      if (st.active.length === 0) continue;
      active[st.name] = st.active.map((a) => ({ nickname: a.adapter.nickname, path: a.adapter.path, merged: st.merged, strength: a.strength }));
    }
    return { loaded_adapters: [...this.cache.values()].map((a) => ({ nickname: a.nickname, path: a.path })), active };
  }

  /** sha256 of each named module's weights as the forward uses them ('not_found' for other names); default: every target. */
  checksums(moduleNames: string[] | null = null): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of moduleNames ?? this.targets) {
      const st = this.targetStates.get(name);
      out[name] = st ? weightsChecksum(st.model) : 'not_found';
    }
    return out;
  }

  /** The active sets and merge states, as set_lora calls can rebuild them. */
  snapshot(): LoraSnapshot {
    const targets: LoraSnapshot['targets'] = {};
    for (const st of this.targetStates.values()) {
      if (st.active.length === 0) continue;
      targets[st.name] = { adapters: st.active.map((a) => ({ nickname: a.adapter.nickname, path: a.adapter.path, strength: a.strength })), merged: st.merged };
    }
    return { targets };
  }

  /** Rebuilds a snapshot's active sets (reading the adapters again) and merge states. */
  async restore(snapshot: LoraSnapshot): Promise<void> {
    for (const [target, s] of Object.entries(snapshot.targets)) {
      await this.setLora({
        lora_nickname: s.adapters.map((a) => a.nickname),
        lora_path: s.adapters.map((a) => a.path),
        target: s.adapters.map(() => target),
        strength: s.adapters.map((a) => a.strength),
      });
      if (!s.merged) await this.unmergeLora(target);
    }
  }

  /** Restores every base weight and frees the adapters (dispose it before the pipeline it works on). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const adapters = new Set<Adapter>(this.cache.values());
    for (const st of this.targetStates.values()) {
      this.restoreBases(st);
      for (const a of st.active) adapters.add(a.adapter);
      st.active = [];
    }
    this.cache.clear();
    for (const a of adapters) this.disposeAdapter(a);
  }
}

/** loraMerge with the adapter tensors moved to the weight's device first (they are kept on the host). */
function mergeOnDevice(base: Tensor, deltas: LoraDelta[], out: Tensor): void {
  if (out.device === 'cpu') {
    loraMerge(base, deltas, out);
    return;
  }
  scope(() => loraMerge(base, deltas.map((d) => ({ up: d.up.toDevice(out.device), down: d.down.toDevice(out.device), scale: d.scale })), out));
}

/**
 * The LoRA targets of a pipeline: each module name of info.loraTargets with the model the pipeline
 * exposes for it (`dit` for the transformer). Models without parameter access are left out.
 */
export function pipelineLoraTargets(pipeline: { info: { loraTargets: string[] } }): Record<string, LoraTargetModel> {
  const accessors: Record<string, string> = { transformer: 'dit', transformer_2: 'dit2', critic: 'critic' };
  const out: Record<string, LoraTargetModel> = {};
  for (const target of pipeline.info.loraTargets) {
    const model = (pipeline as unknown as Record<string, unknown>)[accessors[target] ?? target] as Partial<LoraTargetModel> | undefined;
    if (model && typeof model.parameter === 'function' && typeof model.parameterNames === 'function') out[target] = model as LoraTargetModel;
  }
  return out;
}
