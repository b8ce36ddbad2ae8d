// Job and file ids: generated here only, and checked by a strict pattern before any path is built from them.
import { randomBytes } from 'node:crypto';

export type IdKind = 'video' | 'img' | 'imgreq';

const ID_PATTERN = /^(video|img|imgreq)_[0-9a-f]{32}$/;

/** A new random id such as `video_3f9c...` (prefix, underscore, 32 lowercase hex digits). */
export function newId(kind: IdKind): string {
  return `${kind}_${randomBytes(16).toString('hex')}`;
}

/** True when `id` has exactly the shape newId produces (optionally of one kind). */
export function isValidId(id: unknown, kind?: IdKind): id is string {
  if (typeof id !== 'string') return false;
  const m = ID_PATTERN.exec(id);
  return m !== null && (kind === undefined || m[1] === kind);
}

/** Throws unless `id` is a well-formed id: the only gate before an id becomes part of a file path. */
export function assertId(id: unknown, kind?: IdKind): string {
  if (!isValidId(id, kind)) throw new Error(`malformed ${kind ? `${kind} ` : ''}id ${JSON.stringify(id)}`);
  return id;
}
