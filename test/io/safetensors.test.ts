// safetensors: round trips of every dtype, byte-identical output to the reference writer, header
// validation errors, and tensors that are views of the mapped file (no copy).
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { SafetensorsError, SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors.js';
import { randomArray } from '../helpers/numeric.js';

type Tap = Parameters<Parameters<typeof t.test>[0]>[0];

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const dir = mkdtempSync(join(tmpdir(), 'nd-safetensors-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** A file of an 8-byte length, the header text and data bytes; headerLength overrides the length field. */
function rawFile(name: string, header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): string {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(text.length));
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([len, text, data]));
  return path;
}

function expectError(tt: Tap, path: string, pattern: RegExp, tensor?: string) {
  let caught: unknown;
  try {
    SafetensorsFile.open(path).dispose();
  } catch (err) {
    caught = err;
  }
  tt.ok(caught instanceof SafetensorsError, `${path}: throws a SafetensorsError`);
  const e = caught as SafetensorsError;
  tt.match(e.message, pattern);
  tt.equal(e.file, path, 'names the file');
  tt.ok(e.message.startsWith(`${path}: `), 'the message starts with the file');
  if (tensor !== undefined) {
    tt.equal(e.tensor, tensor, 'names the tensor');
    tt.ok(e.message.includes(`tensor '${tensor}'`), 'the message names the tensor');
  }
}

t.test('round trip of every dtype keeps shapes, bytes and metadata', (tt) => {
  const f32 = randomArray(24, 1, -3, 3);
  const src: Record<string, E.Tensor> = {
    'f32.weight': E.tensor(Float32Array.from(f32), [2, 3, 4]),
    'f16.weight': E.tensor(Array.from(f32.subarray(0, 6)), [6], { dtype: 'float16' }),
    'bf16.weight': E.tensor(Array.from(f32.subarray(0, 12)), [3, 4], { dtype: 'bfloat16' }),
    'i32.ids': E.tensor(Int32Array.from([-7, 0, 5, 2147483647]), [2, 2]),
    'i64.ids': E.tensor(BigInt64Array.from([-(2n ** 40n), 3n, 2n ** 53n]), [3]),
    'fp8.weight': E.tensor(Uint8Array.from([0x00, 0x38, 0xb8, 0x7e, 0x01]), [5], { dtype: 'float8_e4m3' }),
    'u8.mask': E.tensor(Uint8Array.from([0, 1, 255]), [3], { dtype: 'uint8' }),
    scalar: E.tensor([2.5], []),
    empty: E.tensor([], [0, 4]),
  };
  const path = join(dir, 'roundtrip.safetensors');
  writeSafetensors(path, src, { format: 'pt', note: 'round trip' });
  const f = SafetensorsFile.open(path);
  tt.same(f.metadata, { format: 'pt', note: 'round trip' });
  tt.same(new Set(f.names()), new Set(Object.keys(src)));
  for (const [name, s] of Object.entries(src)) {
    const info = f.info(name);
    tt.equal(info.dtype, s.dtype, `${name} dtype`);
    tt.same(info.shape, s.shape, `${name} shape`);
    tt.equal(info.byteLength, s.numel * E.elementSize(s.dtype), `${name} byte length`);
    const back = f.tensor(name);
    tt.same(back.bytes(), s.bytes(), `${name} bytes`);
    back.dispose();
  }
  tt.same(f.tensor('i64.ids').toArray(), [-(2 ** 40), 3, 2 ** 53]);
  tt.equal(f.tensor('scalar').item(), 2.5);
  f.dispose();
  E.disposeAll(src);
  tt.same(readdirSync(dir).filter((n) => n.endsWith('.tmp')), [], 'no temporary file is left');
  tt.end();
});

t.test('writer layout: 8-byte padded header, dtype-alignment then name order, non-contiguous input', (tt) => {
  const base = E.tensor(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
  const transposed = base.transpose(0, 1); // [3, 2], not contiguous
  const path = join(dir, 'layout.safetensors');
  writeSafetensors(path, {
    b_u8: E.tensor([1, 2, 3], [3], { dtype: 'uint8' }),
    a_f16: E.tensor([1, 2], [2], { dtype: 'float16' }),
    z_i64: E.tensor(BigInt64Array.from([1n]), [1]),
    t_f32: transposed,
    a_f32: base,
  });
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  tt.equal(n % 8, 0, 'header length is a multiple of 8');
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  tt.same(Object.keys(header), ['z_i64', 'a_f32', 't_f32', 'a_f16', 'b_u8'], 'I64, F32 (by name), F16, U8');
  const size: Record<string, number> = { I64: 8, F32: 4, F16: 2, U8: 1 };
  let at = 0;
  for (const [name, e] of Object.entries(header)) {
    tt.equal(e.data_offsets[0], at, `${name} starts where the previous ended`);
    tt.equal((8 + n + at) % size[e.dtype]!, 0, `${name} is aligned to its element size in the file`);
    at = e.data_offsets[1];
  }
  tt.equal(bytes.length, 8 + n + at, 'file ends with the last tensor');
  const f = SafetensorsFile.open(path);
  tt.same(f.tensor('t_f32').toArray(), [1, 4, 2, 5, 3, 6], 'strided input written in logical order');
  f.dispose();
  tt.end();
});

t.test('rewriting reference files reproduces them byte for byte', (tt) => {
  const files = [
    join(GOLDEN, 'wan21-t2v', 'io.safetensors'),
    join(GOLDEN, 'wan21-t2v', 'lora_peft.safetensors'),
    join(GOLDEN, 'zimage-turbo', 'lora_kohya.safetensors'),
    join(GOLDEN, 'flux2-klein', 'model', 'vae', 'diffusion_pytorch_model.safetensors'),
    join(GOLDEN, 'zimage-turbo', 'model', 'text_encoder', 'model.safetensors'),
  ];
  for (const p of files) {
    const f = SafetensorsFile.open(p);
    const tensors = Object.fromEntries(f.names().map((n) => [n, f.tensor(n)]));
    const out = join(dir, 'rewrite.safetensors');
    writeSafetensors(out, tensors, { ...f.metadata });
    tt.ok(readFileSync(out).equals(readFileSync(p)), `${p.slice(GOLDEN.length + 1)} identical`);
    E.disposeAll(tensors);
    f.dispose();
  }
  tt.end();
});

t.test('tensors are views of the mapped file: mapped bytes grow, host bytes do not', (tt) => {
  const path = join(GOLDEN, 'zimage-turbo', 'model', 'transformer', 'diffusion_pytorch_model.safetensors');
  const size = readFileSync(path).length;
  const before = E.memoryStats();
  const f = SafetensorsFile.open(path);
  const views = f.names().map((n) => f.tensor(n));
  const during = E.memoryStats();
  tt.equal(during.mappedBytes - before.mappedBytes, size, 'the whole file is mapped once');
  tt.equal(during.hostBytes, before.hostBytes, 'no host memory allocated');
  for (const v of views) tt.equal(E.storageInfo(v).kind, 'mapped');
  tt.equal(views[0]!.dtype, 'bfloat16', 'stored dtype kept');
  f.dispose();
  tt.equal(E.memoryStats().mappedBytes - before.mappedBytes, size, 'views keep the mapping alive after dispose()');
  for (const v of views) v.dispose();
  tt.equal(E.memoryStats().mappedBytes, before.mappedBytes, 'unmapped when the last view is released');
  tt.end();
});

t.test('an unaligned data section still reads correct values', (tt) => {
  const header = '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'; // 54 bytes, not a multiple of 4
  const data = new Uint8Array(new Float32Array([1.5, -2]).buffer);
  const f = SafetensorsFile.open(rawFile('unaligned.safetensors', header, data));
  tt.same(f.tensor('x').toArray(), [1.5, -2]);
  f.dispose();
  tt.end();
});

t.test('header validation names the file and the tensor', (tt) => {
  const ok = { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] } };
  const data16 = new Uint8Array(16);

  expectError(tt, rawFile('empty-header.safetensors', ''), /header is not valid JSON/);
  const tiny = join(dir, 'short.safetensors');
  writeFileSync(tiny, Buffer.from([1, 2, 3]));
  expectError(tt, tiny, /3 bytes, too small for the 8-byte header length/);

  expectError(tt, rawFile('huge-len.safetensors', ok, data16, 2n ** 40n), /header length 1099511627776 exceeds the 100000000-byte limit/);
  expectError(tt, rawFile('long-len.safetensors', ok, data16, 5000n), /header length 5000 exceeds the \d+ bytes after the length field/);

  const full = readFileSync(rawFile('full.safetensors', ok, data16));
  const cut = join(dir, 'truncated.safetensors');
  writeFileSync(cut, full.subarray(0, full.length - 5));
  expectError(tt, cut, /data_offsets \[0, 16\] lie outside the data section of 11 bytes/, 'w');
  const cutHeader = join(dir, 'truncated-header.safetensors');
  writeFileSync(cutHeader, full.subarray(0, 20));
  expectError(tt, cutHeader, /header length \d+ exceeds the 12 bytes after the length field/);

  expectError(tt, rawFile('bad-json.safetensors', '{"w": {"dtype": "F32",', data16), /header is not valid JSON/);
  expectError(tt, rawFile('bad-utf8.safetensors', Buffer.from([0x7b, 0xff, 0x7d]).toString('latin1'), data16), /valid (UTF-8|JSON)/);
  expectError(tt, rawFile('array.safetensors', [1, 2], data16), /header must be a JSON object/);
  expectError(tt, rawFile('string.safetensors', '"text"', data16), /header must be a JSON object/);

  expectError(tt, rawFile('f64.safetensors', { d: { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }, data16), /unsupported dtype 'F64'/, 'd');
  expectError(tt, rawFile('bool.safetensors', { m: { dtype: 'BOOL', shape: [16], data_offsets: [0, 16] } }, data16), /unsupported dtype 'BOOL'/, 'm');
  expectError(tt, rawFile('q4.safetensors', { q: { dtype: 'Q4_K', shape: [16], data_offsets: [0, 16] } }, data16), /unknown dtype 'Q4_K'/, 'q');

  expectError(tt, rawFile('neg-shape.safetensors', { w: { dtype: 'F32', shape: [-1, 4], data_offsets: [0, 16] } }, data16), /shape must be a list of integers >= 0/, 'w');
  expectError(tt, rawFile('frac-shape.safetensors', { w: { dtype: 'F32', shape: [1.5], data_offsets: [0, 16] } }, data16), /shape must be/, 'w');
  expectError(tt, rawFile('no-offsets.safetensors', { w: { dtype: 'F32', shape: [4] } }, data16), /data_offsets must be \[begin, end\]/, 'w');
  expectError(tt, rawFile('outside.safetensors', { w: { dtype: 'F32', shape: [8], data_offsets: [0, 32] } }, data16), /lie outside the data section of 16 bytes/, 'w');
  expectError(tt, rawFile('reversed.safetensors', { w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data16), /end before they begin/, 'w');
  expectError(tt, rawFile('mismatch.safetensors', { w: { dtype: 'F32', shape: [3], data_offsets: [0, 16] } }, data16), /shape \[3\] x F32 is 12 bytes but data_offsets \[0, 16\] hold 16/, 'w');
  expectError(
    tt,
    rawFile('overlap.safetensors', { a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, data16),
    /data_offsets \[8, 16\] overlap those of 'a' \[0, 12\]/,
    'b',
  );
  expectError(tt, rawFile('meta.safetensors', { __metadata__: { n: 3 }, ...ok }, data16), /__metadata__ value of 'n' must be a string/);
  expectError(tt, rawFile('entry.safetensors', { w: 'F32' }, data16), /entry must be an object/, 'w');

  const missing = join(dir, 'does-not-exist.safetensors');
  expectError(tt, missing, /cannot open/);

  const good = SafetensorsFile.open(rawFile('good.safetensors', ok, data16));
  tt.throws(() => good.tensor('nope'), /tensor 'nope': no such tensor in this file/);
  good.dispose();
  tt.throws(() => good.tensor('w'), /file was disposed/);
  tt.end();
});

t.test('the writer refuses bad input and leaves no file behind', (tt) => {
  const path = join(dir, 'refused.safetensors');
  const x = E.tensor([1], [1]);
  tt.throws(() => writeSafetensors(path, { __metadata__: x }), /'__metadata__' is reserved/);
  tt.throws(() => writeSafetensors(path, { x }, { n: 3 as unknown as string }), /metadata value of 'n' must be a string/);
  const gone = E.tensor([1], [1]);
  gone.dispose();
  tt.throws(() => writeSafetensors(path, { gone }), /tensor 'gone' is disposed/);
  tt.throws(() => writeSafetensors(join(dir, 'no-such-dir', 'x.safetensors'), { x }), /ENOENT/);
  tt.same(readdirSync(dir).filter((n) => n.startsWith('refused') || n.endsWith('.tmp')), []);
  x.dispose();
  tt.end();
});
