// The LoRA management requests (set / merge / unmerge) as the HTTP API and the CLI take them, checked
// and normalised without touching any weights, and the upstream server's success messages. No engine
// imports: the server process uses this before anything reaches the worker.

/** A LoRA that cannot be set or applied; `key` names the first offending tensor key of a file when one is to blame. */
export class LoraError extends Error {
  readonly key: string | null;
  constructor(message: string, key: string | null = null) {
    super(message);
    this.name = 'LoraError';
    this.key = key;
  }
}

/** Modules a LoRA can target; `all` means every one the model has. */
export const LORA_TARGETS = ['all', 'transformer', 'transformer_2', 'critic'] as const;
export type LoraTarget = (typeof LORA_TARGETS)[number];

/** set_lora as received: scalars or lists (upstream field names). */
export interface SetLoraArgs {
  lora_nickname: string | string[];
  lora_path?: string | Array<string | null> | null;
  target?: string | string[];
  strength?: number | number[];
}

/** set_lora with every list expanded to one entry per adapter. */
export interface SetLoraPlan {
  nicknames: string[];
  /** null: re-activate the cached adapter of that nickname */
  paths: Array<string | null>;
  targets: LoraTarget[];
  strengths: number[];
}

function isTarget(t: string): t is LoraTarget {
  return (LORA_TARGETS as readonly string[]).includes(t);
}

function checkTarget(t: unknown, field: string): LoraTarget {
  if (typeof t !== 'string' || !isTarget(t)) throw new LoraError(`${field} must be one of ${LORA_TARGETS.join(', ')}, got ${JSON.stringify(t)}`);
  return t;
}

function checkStrength(s: unknown, field: string): number {
  if (typeof s !== 'number' || !Number.isFinite(s)) throw new LoraError(`${field} must be a finite number, got ${JSON.stringify(s)}`);
  return s;
}

/**
 * Expands set_lora's fields: lora_nickname (one or a list), lora_path (one per nickname, or absent /
 * null to re-activate cached adapters), target and strength (one value for all, or one per nickname).
 * Lists must have the nickname list's length. Throws LoraError.
 */
export function planSetLora(args: SetLoraArgs): SetLoraPlan {
  const nicknames = Array.isArray(args.lora_nickname) ? args.lora_nickname : [args.lora_nickname];
  const n = nicknames.length;
  if (n === 0) throw new LoraError('lora_nickname must name at least one adapter');
  nicknames.forEach((nick, i) => {
    if (typeof nick !== 'string' || nick.trim() === '') throw new LoraError(`lora_nickname[${i}] must be a non-empty string`);
  });
  const dup = nicknames.find((nick, i) => nicknames.indexOf(nick) !== i);
  if (dup !== undefined) throw new LoraError(`lora_nickname '${dup}' is given twice`);
  const lengthError = (field: string, len: number) =>
    new LoraError(`lora_nickname has ${n} entr${n === 1 ? 'y' : 'ies'} but ${field} has ${len}: lists must have the same length (a single ${field === 'lora_path' ? 'path fits one nickname' : 'value applies to all'})`);

  let paths: Array<string | null>;
  const p = args.lora_path;
  if (p === undefined || p === null) paths = nicknames.map(() => null);
  else if (Array.isArray(p)) {
    if (p.length !== n) throw lengthError('lora_path', p.length);
    paths = p.map((x, i) => {
      if (x !== null && (typeof x !== 'string' || x.trim() === '')) throw new LoraError(`lora_path[${i}] must be a non-empty string or null`);
      return x;
    });
  } else {
    if (typeof p !== 'string' || p.trim() === '') throw new LoraError('lora_path must be a non-empty string');
    if (n !== 1) throw lengthError('lora_path', 1);
    paths = [p];
  }

  const t = args.target ?? 'all';
  let targets: LoraTarget[];
  if (Array.isArray(t)) {
    if (t.length !== n) throw lengthError('target', t.length);
    targets = t.map((x, i) => checkTarget(x, `target[${i}]`));
  } else targets = nicknames.map(() => checkTarget(t, 'target'));

  const s = args.strength ?? 1;
  let strengths: number[];
  if (Array.isArray(s)) {
    if (s.length !== n) throw lengthError('strength', s.length);
    strengths = s.map((x, i) => checkStrength(x, `strength[${i}]`));
  } else strengths = nicknames.map(() => checkStrength(s, 'strength'));

  return { nicknames: [...nicknames], paths, targets, strengths };
}

/** merge_lora_weights / unmerge_lora_weights: the target (default all) and, for merge, an optional strength. */
export function checkMergeArgs(args: { target?: string; strength?: number | null }): { target: LoraTarget; strength: number | null } {
  return {
    target: checkTarget(args.target ?? 'all', 'target'),
    strength: args.strength === undefined || args.strength === null ? null : checkStrength(args.strength, 'strength'),
  };
}

/** Python's str() of a float (1.0, 0.8), as the upstream messages print strengths. */
function pyFloat(x: number): string {
  return Number.isInteger(x) ? x.toFixed(1) : String(x);
}

/** "Successfully set LoRA adapter(s): a, b (target: all, strength: 0.80, 1.00)" as the upstream server words it. */
export function setLoraMessage(args: SetLoraArgs): string {
  const list = <T>(v: T | T[], f: (x: T) => string) => (Array.isArray(v) ? v.map(f).join(', ') : f(v));
  const nick = list(args.lora_nickname, String);
  const target = list(args.target ?? 'all', String);
  const strength = list(args.strength ?? 1, (x: number) => x.toFixed(2));
  return `Successfully set LoRA adapter(s): ${nick} (target: ${target}, strength: ${strength})`;
}

export function mergeMessage(target: string, strength: number | null): string {
  return `Successfully merged LoRA weights (target: ${target}${strength === null ? '' : `, strength: ${pyFloat(strength)}`})`;
}

export function unmergeMessage(target: string): string {
  return `Successfully unmerged LoRA weights (target: ${target})`;
}
