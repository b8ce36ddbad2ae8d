// Hub settings resolved from options and the environment variables huggingface_hub reads (constants.py,
// utils/_auth.py), at call time so that a long-running process sees the environment it was started with.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

export interface HubOptions {
  /** Branch, tag or commit; default `main`. */
  revision?: string;
  /** Access token; default HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the token file ($HF_TOKEN_PATH or $HF_HOME/token). */
  token?: string;
  /** Cache root (the folder that holds models--org--name); default $HF_HUB_CACHE or $HF_HOME/hub. */
  cacheDir?: string;
  /** Hub URL; default $HF_ENDPOINT or https://huggingface.co. */
  endpoint?: string;
  /** Never touch the network; default $HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE). */
  offline?: boolean;
}

export interface HubSettings {
  revision: string;
  token: string | undefined;
  cacheDir: string;
  endpoint: string;
  offline: boolean;
}

function isTrue(v: string | undefined): boolean {
  return v !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(v.toUpperCase());
}

function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p;
}

function cleanToken(t: string | undefined): string | undefined {
  const cleaned = t?.replace(/[\r\n]/g, '').trim();
  return cleaned ? cleaned : undefined;
}

export function hfHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HOME) return expandHome(env.HF_HOME);
  return join(env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : join(homedir(), '.cache'), 'huggingface');
}

export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.HF_HUB_CACHE ?? env.HUGGINGFACE_HUB_CACHE;
  return dir ? expandHome(dir) : join(hfHome(env), 'hub');
}

export function hubToken(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const fromEnv = cleanToken(env.HF_TOKEN) ?? cleanToken(env.HUGGING_FACE_HUB_TOKEN);
  if (fromEnv) return fromEnv;
  const tokenPath = env.HF_TOKEN_PATH ? expandHome(env.HF_TOKEN_PATH) : join(hfHome(env), 'token');
  try {
    return cleanToken(readFileSync(tokenPath, 'utf8'));
  } catch {
    return undefined;
  }
}

export function resolveSettings(opts: HubOptions, env: NodeJS.ProcessEnv = process.env): HubSettings {
  return {
    revision: opts.revision ?? DEFAULT_REVISION,
    token: cleanToken(opts.token) ?? hubToken(env),
    cacheDir: opts.cacheDir ? expandHome(opts.cacheDir) : hubCacheDir(env),
    endpoint: (opts.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, ''),
    offline: opts.offline ?? (isTrue(env.HF_HUB_OFFLINE) || isTrue(env.TRANSFORMERS_OFFLINE)),
  };
}

/** Seconds without data before a transfer is considered stalled ($HF_HUB_DOWNLOAD_TIMEOUT, default 10 like Python). */
export function downloadTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const s = Number(env.HF_HUB_DOWNLOAD_TIMEOUT);
  return Number.isFinite(s) && s > 0 ? s * 1000 : 10_000;
}
