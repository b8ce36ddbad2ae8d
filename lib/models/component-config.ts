// Loading a model class from one component folder alone (without the pipeline's model_index.json):
// its config.json, with the class check diffusers configs allow, and its memory-mapped weights.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type ComponentClass, type ConfigOf, COMPONENT_CLASSES, parseComponentConfig } from '../io/configs.js';
import { openWeights, type WeightSet } from '../io/weights.js';

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

/**
 * Reads <dir>'s config as className and memory-maps its safetensors, then builds the model over them
 * (the model takes ownership of the weights); the weights are released when building fails.
 */
export async function loadFromFolder<C extends ComponentClass, M>(
  dir: string,
  className: C,
  build: (weights: WeightSet, config: ConfigOf<C>) => M,
): Promise<M> {
  const config = await readConfigFile(dir, className);
  const weights = await openWeights(dir);
  try {
    return build(weights, config);
  } catch (err) {
    weights.dispose();
    throw err;
  }
}
