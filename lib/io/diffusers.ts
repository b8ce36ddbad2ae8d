// The diffusers pipeline folder: model_index.json names the pipeline class and its components;
// each component lives in a subfolder (or where a --<component>-path override points) with its
// own config.json / scheduler_config.json.
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { COMPONENT_CLASSES, type ComponentClass, ConfigError, type ConfigOf, isComponentClass, parseComponentConfig } from './configs.js';

/** A model folder that cannot be used (missing, not a diffusers folder, bad model_index.json). */
export class ModelFolderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelFolderError';
  }
}

export interface ComponentSpec {
  /** 'diffusers' or 'transformers' */
  library: string;
  className: string;
}

export interface ModelIndex {
  /** the pipeline class, e.g. WanPipeline */
  className: string;
  diffusersVersion?: string;
  /** every component entry; null for entries saved as [null, null] (e.g. Wan2.1's transformer_2) */
  components: Record<string, ComponentSpec | null>;
  /** the pipeline's own settings: keys that are neither components nor '_'-prefixed (is_distilled, boundary_ratio, ...) */
  pipelineConfig: Record<string, unknown>;
  /** the parsed file */
  raw: Record<string, unknown>;
}

/** Local folders replacing a component's subfolder, keyed by component name (e.g. vae, text_encoder). */
export type ComponentOverrides = Record<string, string>;

const SINGLE_FILE_MESSAGE = 'single-file checkpoints are not supported yet; pass a diffusers folder with model_index.json';

async function statOrNull(path: string) {
  try {
    return await stat(path);
  } catch {
    return null;
  }
}

/** Checks that modelDir is a diffusers folder; a .safetensors file gets a clear message. */
export async function checkModelFolder(modelDir: string): Promise<void> {
  const st = await statOrNull(modelDir);
  if (!st) throw new ModelFolderError(`model path ${modelDir} does not exist`);
  if (st.isFile()) {
    if (/\.(safetensors|ckpt|pt|pth|bin|gguf)$/i.test(modelDir)) throw new ModelFolderError(`${modelDir}: ${SINGLE_FILE_MESSAGE}`);
    throw new ModelFolderError(`model path ${modelDir} is a file; pass a diffusers folder with model_index.json`);
  }
  if (!st.isDirectory()) throw new ModelFolderError(`model path ${modelDir} is not a folder`);
  if (!(await statOrNull(join(modelDir, 'model_index.json'))))
    throw new ModelFolderError(`${modelDir} has no model_index.json: not a diffusers pipeline folder`);
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, `cannot read: ${(err as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(path, `not valid JSON: ${(err as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(path, 'must hold a JSON object');
  return v as Record<string, unknown>;
}

/** Reads <modelDir>/model_index.json. */
export async function readModelIndex(modelDir: string): Promise<ModelIndex> {
  await checkModelFolder(modelDir);
  const file = join(modelDir, 'model_index.json');
  const raw = await readJsonObject(file);
  const className = raw._class_name;
  if (typeof className !== 'string' || className === '') throw new ConfigError(file, "missing required field '_class_name'", '_class_name');
  const version = raw._diffusers_version;
  const components: Record<string, ComponentSpec | null> = {};
  const pipelineConfig: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (key.startsWith('_')) continue;
    const isPair = Array.isArray(value) && value.length === 2 && value.every((v) => v === null || typeof v === 'string');
    if (!isPair) {
      pipelineConfig[key] = value;
      continue;
    }
    const [library, cls] = value as [string | null, string | null];
    if (library === null || cls === null) {
      if (library !== cls) throw new ConfigError(file, `component '${key}' must be [library, class] or [null, null], got ${JSON.stringify(value)}`, key);
      components[key] = null;
    } else {
      components[key] = { library, className: cls };
    }
  }
  return {
    className,
    ...(typeof version === 'string' ? { diffusersVersion: version } : {}),
    components,
    pipelineConfig,
    raw,
  };
}

/**
 * The folder of every present component: the override when given, else <modelDir>/<component>.
 * Overrides must name components of model_index.json and point to existing folders.
 */
export async function resolveComponentDirs(modelDir: string, overrides: ComponentOverrides = {}): Promise<Record<string, string>> {
  const index = await readModelIndex(modelDir);
  return resolveWithIndex(modelDir, index, overrides);
}

async function resolveWithIndex(modelDir: string, index: ModelIndex, overrides: ComponentOverrides): Promise<Record<string, string>> {
  const present = Object.keys(index.components).filter((k) => index.components[k] !== null);
  for (const [component, path] of Object.entries(overrides)) {
    if (!present.includes(component))
      throw new ModelFolderError(
        `${componentPathFlag(component)}: ${index.className} at ${modelDir} has no component '${component}' (components: ${present.join(', ')})`,
      );
    const st = await statOrNull(path);
    if (!st) throw new ModelFolderError(`${componentPathFlag(component)}: ${path} does not exist`);
    if (!st.isDirectory())
      throw new ModelFolderError(
        `${componentPathFlag(component)}: ${path} is not a folder` + (/\.safetensors$/i.test(path) ? ` (${SINGLE_FILE_MESSAGE})` : ''),
      );
  }
  const dirs: Record<string, string> = {};
  for (const c of present) dirs[c] = overrides[c] !== undefined ? resolve(overrides[c]) : join(modelDir, c);
  return dirs;
}

/** A component's parsed config, discriminated by class. */
export type ComponentConfig = {
  [C in ComponentClass]: {
    component: string;
    className: C;
    /** the component's folder */
    dir: string;
    /** the config file read */
    file: string;
    config: ConfigOf<C>;
  };
}[ComponentClass];

/** The class diffusers configs record for themselves (_class_name), checked against model_index.json. */
function checkDeclaredClass(file: string, expected: string, raw: Record<string, unknown>): void {
  const declared = raw._class_name;
  if (typeof declared === 'string' && declared !== expected)
    throw new ConfigError(file, `is a ${declared} config, but model_index.json names ${expected} for this component`, '_class_name');
}

/**
 * Reads and validates the config of one component (class from model_index.json; folder from the
 * overrides or <modelDir>/<component>).
 */
export async function readComponentConfig(modelDir: string, component: string, overrides: ComponentOverrides = {}): Promise<ComponentConfig> {
  const index = await readModelIndex(modelDir);
  const spec = index.components[component];
  if (spec === undefined)
    throw new ModelFolderError(`${join(modelDir, 'model_index.json')} has no component '${component}' (components: ${Object.keys(index.components).join(', ')})`);
  if (spec === null) throw new ModelFolderError(`${join(modelDir, 'model_index.json')}: component '${component}' is absent ([null, null])`);
  if (!isComponentClass(spec.className))
    throw new ModelFolderError(
      `${join(modelDir, 'model_index.json')}: component '${component}' has class ${spec.className}, which this project does not load (known: ${Object.keys(COMPONENT_CLASSES).join(', ')})`,
    );
  const dir = (await resolveWithIndex(modelDir, index, overrides))[component]!;
  const className = spec.className;
  const file = join(dir, COMPONENT_CLASSES[className].file);
  const raw = await readJsonObject(file);
  if (spec.library === 'diffusers') checkDeclaredClass(file, className, raw);
  const config = parseComponentConfig(className, raw, file);
  return { component, className, dir, file, config } as ComponentConfig;
}

/** Narrows a component config to the expected class, or throws naming what was found. */
export function expectConfig<C extends ComponentClass>(cc: ComponentConfig, ...classes: C[]): ConfigOf<C> {
  if (!(classes as string[]).includes(cc.className))
    throw new ModelFolderError(`component '${cc.component}' (${cc.file}) is a ${cc.className}; expected ${classes.join(' or ')}`);
  return cc.config as ConfigOf<C>;
}

// ---- --<component>-path flags ----

/** The upstream CLI flag overriding a component's folder: text_encoder -> --text-encoder-path. */
export function componentPathFlag(component: string): string {
  return `--${component.replace(/_/g, '-')}-path`;
}

/** *-path flags that are not component overrides. */
export const NON_COMPONENT_PATH_FLAGS: ReadonlySet<string> = new Set([
  '--model-path',
  '--output-path',
  '--lora-path',
  '--image-path',
]);

/**
 * Takes every `--<component>-path <dir>` / `--<component>-path=<dir>` out of argv (as the upstream
 * CLI does with flags it does not define) and returns them keyed by component (dashes -> underscores).
 */
export function extractComponentPathArgs(
  argv: string[],
  reserved: ReadonlySet<string> = NON_COMPONENT_PATH_FLAGS,
): { overrides: ComponentOverrides; rest: string[] } {
  const overrides: ComponentOverrides = {};
  const rest: string[] = [];
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i]!;
    const m = /^--([a-z0-9][a-z0-9-]*)-path(?:=(.*))?$/.exec(arg);
    if (!m || reserved.has(`--${m[1]}-path`)) {
      rest.push(arg);
      continue;
    }
    let value = m[2];
    if (value === undefined) {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw new ModelFolderError(`${arg} needs a folder`);
      ++i;
    }
    if (value === '') throw new ModelFolderError(`${arg.split('=')[0]} needs a folder`);
    overrides[m[1]!.replace(/-/g, '_')] = value;
  }
  return { overrides, rest };
}
