// Reading the config.json of one component folder for a model class that loads from a folder
// alone (without the pipeline's model_index.json), with the class check diffusers configs allow.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ComponentClass, type ConfigOf, COMPONENT_CLASSES, parseComponentConfig } from '../io/configs.js';

/** Parses <dir>/config.json (or the scheduler file) as className; a diffusers _class_name must agree. */
export async function readConfigFile<C extends ComponentClass>(dir: string, className: C): Promise<ConfigOf<C>> {
  const file = join(dir, COMPONENT_CLASSES[className].file);
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: cannot read the ${className} config: ${(err as Error).message}`);
  }
  const declared = (raw as { _class_name?: unknown } | null)?._class_name;
  if (declared !== undefined && declared !== className) throw new Error(`${file}: _class_name is ${JSON.stringify(declared)}, expected "${className}"`);
  return parseComponentConfig(className, raw, file);
}
