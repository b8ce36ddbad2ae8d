// A small flag parser for commands with many typed options and a --config file: `--name value`,
// `--name=value`, booleans as `--flag`, `--flag true|false` or `--no-flag` (the upstream server's style),
// unknown flags rejected, config keys in kebab-case or snake_case, flags winning over the file.
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';

import YAML from 'yaml';

/** 'paths': a string that may be given several times (each occurrence appends; a list in a config file). */
export type FlagType = 'string' | 'int' | 'number' | 'boolean' | 'list' | 'paths' | 'duration';

export interface FlagSpec {
  type: FlagType;
  help: string;
  placeholder?: string;
  choices?: readonly string[];
  /** shown in --help; applied by the command, not by the parser */
  defaultText?: string;
}

export type FlagTable = Readonly<Record<string, FlagSpec>>;
export type FlagValue = string | number | boolean | string[];

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

/** "90" (seconds), "90s", "30m", "24h", "7d" -> seconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$/i.exec(s.trim());
  if (!m) throw new Error(`'${s}' is not a duration (e.g. 3600, 90s, 30m, 24h, 7d)`);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's').toLowerCase() as 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * unit;
}

function convert(name: string, spec: FlagSpec, raw: unknown): FlagValue {
  const fail = (what: string) => new UsageError(`--${name}: ${what}`);
  switch (spec.type) {
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      const s = String(raw).toLowerCase();
      if (TRUE.has(s)) return true;
      if (FALSE.has(s)) return false;
      throw fail(`expected true or false, got '${String(raw)}'`);
    }
    case 'int': {
      const n = typeof raw === 'number' ? raw : /^-?\d+$/.test(String(raw).trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw fail(`expected an integer, got '${String(raw)}'`);
      return n;
    }
    case 'number': {
      const n = typeof raw === 'number' ? raw : String(raw).trim() === '' ? NaN : Number(raw);
      if (!Number.isFinite(n)) throw fail(`expected a number, got '${String(raw)}'`);
      return n;
    }
    case 'duration': {
      if (typeof raw === 'number' && raw >= 0) return raw;
      try {
        return parseDuration(String(raw));
      } catch (err) {
        throw fail((err as Error).message);
      }
    }
    case 'list': {
      const items = Array.isArray(raw) ? raw.map(String) : String(raw).split(',');
      return items.map((s) => s.trim()).filter((s) => s.length > 0);
    }
    case 'paths': {
      const items = Array.isArray(raw) ? raw : [raw];
      if (items.some((s) => typeof s === 'object' || String(s) === '')) throw fail('expected a path');
      return items.map(String);
    }
    case 'string': {
      if (typeof raw === 'object' && raw !== null) throw fail('expected a string');
      const s = String(raw);
      if (spec.choices && !spec.choices.includes(s)) throw fail(`expected one of ${spec.choices.join(', ')}, got '${s}'`);
      return s;
    }
  }
}

export interface ParsedFlags {
  values: Record<string, FlagValue>;
  /** values of flags matched by the `dynamic` pattern, keyed by the pattern's first group */
  dynamic: Record<string, string>;
  help: boolean;
}

export interface ParseOptions {
  /** extra flags accepted by pattern, e.g. /^(.+)-path$/ for --<component>-path (string values) */
  dynamic?: RegExp;
}

/** Parses argv against the table. Throws UsageError for unknown flags, missing values and bad values. */
export function parseFlags(argv: readonly string[], table: FlagTable, opts: ParseOptions = {}): ParsedFlags {
  const values: Record<string, FlagValue> = {};
  const dynamic: Record<string, string> = {};
  let help = false;
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i] as string;
    if (arg === '--help' || arg === '-h') {
      help = true;
      continue;
    }
    if (!arg.startsWith('--') || arg === '--') throw new UsageError(`unexpected argument '${arg}' (options start with --)`);
    const eq = arg.indexOf('=');
    let name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    let inline: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    let spec = table[name];
    if (!spec && name.startsWith('no-') && table[name.slice(3)]?.type === 'boolean' && inline === undefined) {
      name = name.slice(3);
      spec = table[name];
      inline = 'false';
    }
    if (!spec) {
      const m = opts.dynamic?.exec(name);
      if (m && m[1]) {
        const v = inline ?? argv[++i];
        if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new UsageError(`--${name} needs a value`);
        dynamic[m[1]] = v;
        continue;
      }
      throw new UsageError(`unknown option --${name} (see --help)`);
    }
    if (spec.type === 'boolean') {
      if (inline !== undefined) values[name] = convert(name, spec, inline);
      else {
        const next = argv[i + 1]?.toLowerCase();
        if (next !== undefined && (TRUE.has(next) || FALSE.has(next))) {
          values[name] = convert(name, spec, next);
          ++i;
        } else values[name] = true;
      }
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined || (inline === undefined && v.startsWith('--'))) throw new UsageError(`--${name} needs a value`);
    const value = convert(name, spec, v);
    const before = values[name];
    values[name] = spec.type === 'paths' && Array.isArray(before) && Array.isArray(value) ? [...before, ...value] : value;
  }
  return { values, dynamic, help };
}

/**
 * Reads a JSON or YAML config file of option values (keys as flag names, kebab-case or snake_case).
 * Unknown keys are errors, like unknown flags.
 */
export function readConfigFile(path: string, table: FlagTable, opts: ParseOptions = {}): ParsedFlags {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`--config: cannot read ${path} (${(err as Error).message})`);
  }
  let data: unknown;
  try {
    data = extname(path).toLowerCase() === '.json' ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new UsageError(`--config: ${path} is not valid ${extname(path) === '.json' ? 'JSON' : 'YAML'} (${(err as Error).message})`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new UsageError(`--config: ${path} must hold a mapping of options`);
  const values: Record<string, FlagValue> = {};
  const dynamic: Record<string, string> = {};
  for (const [key, raw] of Object.entries(data as Record<string, unknown>)) {
    const name = key.replace(/_/g, '-');
    const spec = table[name];
    if (name === 'config') throw new UsageError(`--config: ${path} cannot name another config file`);
    if (!spec) {
      const m = opts.dynamic?.exec(name);
      if (m && m[1] && typeof raw === 'string') {
        dynamic[m[1]] = raw;
        continue;
      }
      throw new UsageError(`--config: unknown option '${key}' in ${path}`);
    }
    if (raw === null || raw === undefined) continue;
    values[name] = convert(name, spec, raw);
  }
  return { values, dynamic, help: false };
}

/** The --help text of a flag table. */
export function formatHelp(usage: string, table: FlagTable, footer = ''): string {
  const rows = Object.entries(table).map(([name, spec]) => {
    const ph = spec.type === 'boolean' ? '' : ` <${spec.placeholder ?? (spec.choices ? spec.choices.join('|') : spec.type)}>`;
    const dflt = spec.defaultText ? ` (default: ${spec.defaultText})` : '';
    return [`  --${name}${ph}`, `${spec.help}${dflt}`] as const;
  });
  const width = Math.min(44, Math.max(...rows.map(([l]) => l.length)) + 2);
  const lines = rows.map(([l, r]) => (l.length + 2 > width ? `${l}\n${' '.repeat(width)}${r}` : `${l.padEnd(width)}${r}`));
  return `${usage}\n\nOptions:\n${lines.join('\n')}\n  --help${' '.repeat(Math.max(2, width - 8))}show this help${footer ? `\n\n${footer}` : ''}`;
}
