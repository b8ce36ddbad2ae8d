// Reading a multipart form into plain fields and in-memory files, with the limits of @fastify/multipart
// (registered in app.ts) plus checks that busboy leaves to its caller.
import type { FastifyRequest } from 'fastify';

import { ApiError, badRequest } from './errors.js';

export interface UploadedFile {
  field: string;
  filename: string;
  mimetype: string;
  data: Buffer;
}

export type FormValue = string | string[] | Record<string, string>;

export interface ParsedForm {
  fields: Record<string, FormValue>;
  files: UploadedFile[];
}

export interface FormSpec {
  /** file fields accepted (after `[]` is stripped) */
  fileFields: ReadonlySet<string>;
  /** text fields that may repeat or come as `name[]`; collected into arrays */
  arrayFields: ReadonlySet<string>;
}

/**
 * Collects all parts. `name[]` and repeated names become arrays (only for arrayFields), `name[key]` becomes
 * an object field. Unknown file fields, repeated scalar fields and truncated values are rejected.
 */
export async function readForm(request: FastifyRequest, spec: FormSpec): Promise<ParsedForm> {
  const fields: Record<string, FormValue> = {};
  const files: UploadedFile[] = [];
  for await (const part of request.parts()) {
    const rawName = part.fieldname;
    if (part.type === 'file') {
      const field = rawName.endsWith('[]') ? rawName.slice(0, -2) : rawName;
      if (!spec.fileFields.has(field)) {
        await part.toBuffer().catch(() => undefined);
        throw badRequest(`Unexpected file field '${rawName}'`, rawName, 'unknown_parameter');
      }
      const data = await part.toBuffer();
      files.push({ field, filename: part.filename, mimetype: part.mimetype, data });
      continue;
    }
    if (part.valueTruncated || part.fieldnameTruncated) {
      throw new ApiError(413, `Form field '${rawName}' is too large`, 'invalid_request_error', rawName, 'payload_too_large');
    }
    const value = String(part.value);
    const nested = /^([^[\]]+)\[([^[\]]+)\]$/.exec(rawName);
    if (nested) {
      const [, name, key] = nested as unknown as [string, string, string];
      const cur = fields[name];
      if (cur !== undefined && (typeof cur !== 'object' || Array.isArray(cur))) {
        throw badRequest(`Form field '${name}' given both as a value and as an object`, name);
      }
      const obj = (cur as Record<string, string> | undefined) ?? {};
      obj[key] = value;
      fields[name] = obj;
      continue;
    }
    const isArray = rawName.endsWith('[]');
    const name = isArray ? rawName.slice(0, -2) : rawName;
    if (spec.arrayFields.has(name)) {
      const cur = fields[name];
      fields[name] = Array.isArray(cur) ? [...cur, value] : [value];
    } else if (isArray) {
      throw badRequest(`Form field '${name}' does not take a list`, name);
    } else if (fields[name] !== undefined) {
      throw badRequest(`Form field '${name}' given more than once`, name);
    } else {
      fields[name] = value;
    }
  }
  return { fields, files };
}
