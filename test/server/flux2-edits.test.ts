// /v1/images/edits through the official openai SDK against a real server running demo:flux2-klein
// (text + reference images): one and several references as PNG/JPEG/WebP uploads and data: URLs,
// the output size taken from the first prepared reference when `size` is absent, EXIF orientation
// applied and alpha dropped before the pipeline sees the picture, n > 1, streamed edit events, and
// 400s for pictures the model cannot take (too small, too elongated, too many, corrupt).
import sharp from 'sharp';
import t from 'tap';
import { toFile } from 'openai';

import { http, startServer } from '../helpers/server.js';

const server = await startServer({ modelPath: 'demo:flux2-klein' });
t.teardown(() => server.close());
const { client, url } = server;

/** An encoded gradient picture with a bright square (distinct per phase). */
async function picture(width: number, height: number, phase: number, format: 'png' | 'jpeg' | 'webp' = 'png'): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x) {
      const inSquare = Math.abs(x - width / 2) < width / 5 && Math.abs(y - height / 2) < height / 5;
      data.set([(x * 255) / width, (y * 255) / height, inSquare ? 255 - phase : phase].map(Math.round), (y * width + x) * 3);
    }
  const img = sharp(data, { raw: { width, height, channels: 3 } });
  return format === 'png' ? img.png().toBuffer() : format === 'jpeg' ? img.jpeg({ quality: 95 }).toBuffer() : img.webp({ lossless: true }).toBuffer();
}

async function decode(b64: string) {
  const buf = Buffer.from(b64, 'base64');
  const { data, info } = await sharp(buf).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { format: (await sharp(buf).metadata()).format, width: info.width, height: info.height, pixels: data };
}

const EDIT = { prompt: 'make the square red', num_inference_steps: 2, seed: 11 } as const;
const file = async (bytes: Buffer, name: string, type = 'image/png') => toFile(bytes, name, { type });

t.test('one reference: the size follows the prepared reference, or `size` when given', async (t) => {
  const ref = await picture(72, 100, 40);
  const res = await client.images.edit({ image: await file(ref, 'a.png'), ...EDIT } as never);
  t.equal(res.data?.length, 1);
  t.equal(res.size, '64x96', '72x100 centre-cropped to multiples of 16');
  const img = await decode(res.data?.[0]?.b64_json as string);
  t.same([img.format, img.width, img.height], ['png', 64, 96]);
  const sized = await client.images.edit({ image: await file(ref, 'a.png'), ...EDIT, size: '48x32' } as never);
  t.equal(sized.size, '48x32');
  const again = await client.images.edit({ image: await file(ref, 'a.png'), ...EDIT } as never);
  t.equal(again.data?.[0]?.b64_json, res.data?.[0]?.b64_json, 'deterministic for the same request');
  const plain = await client.images.generate({ prompt: EDIT.prompt, num_inference_steps: 2, seed: 11, size: '64x96' } as never);
  t.not(plain.data?.[0]?.b64_json, res.data?.[0]?.b64_json, 'the reference conditions the image');
  t.match((await http(`${url}/models`)).body, { task_type: 'TI2I', pipeline_class: 'Flux2KleinPipeline' });
});

t.test('several references (image[]), every input format, and data: URLs', async (t) => {
  const a = await picture(72, 100, 40);
  const b = await picture(96, 64, 200, 'jpeg');
  const c = await picture(80, 80, 120, 'webp');
  const two = await client.images.edit({ image: [await file(a, 'a.png'), await file(b, 'b.jpg', 'image/jpeg')], ...EDIT } as never);
  t.equal(two.size, '64x96', 'the first reference sets the size');
  const one = await client.images.edit({ image: await file(a, 'a.png'), ...EDIT } as never);
  t.not(two.data?.[0]?.b64_json, one.data?.[0]?.b64_json, 'the second reference changes the image');
  const three = await client.images.edit({
    image: [await file(c, 'c.webp', 'image/webp'), await file(a, 'a.png'), await file(b, 'b.jpg', 'image/jpeg')],
    ...EDIT,
  } as never);
  t.equal(three.size, '80x80', 'a WebP first: its size');
  // the same reference as a data: URL (url[] field) gives the same image as the upload
  const viaUrl = await client.images.edit({ image: [], ...EDIT, url: [`data:image/png;base64,${a.toString('base64')}`] } as never);
  t.equal(viaUrl.data?.[0]?.b64_json, one.data?.[0]?.b64_json, 'data: URL = upload');
});

t.test('EXIF orientation is applied and alpha dropped before the pipeline sees the picture', async (t) => {
  const upright = await picture(72, 100, 40);
  const raw = await sharp(upright).raw().toBuffer();
  // the same picture stored rotated with orientation 6 (display = rotate 90 clockwise)
  const stored = await sharp(raw, { raw: { width: 72, height: 100, channels: 3 } }).rotate(-90).jpeg({ quality: 100 }).withMetadata({ orientation: 6 }).toBuffer();
  const meta = await sharp(stored).metadata();
  t.same([meta.width, meta.height, meta.orientation], [100, 72, 6], 'stored landscape with orientation 6');
  const rotated = await client.images.edit({ image: await file(stored, 'r.jpg', 'image/jpeg'), ...EDIT } as never);
  t.equal(rotated.size, '64x96', 'displayed portrait: the output is portrait');
  const rgba = await sharp(raw, { raw: { width: 72, height: 100, channels: 3 } }).ensureAlpha(0.3).png().toBuffer();
  const withAlpha = await client.images.edit({ image: await file(rgba, 'alpha.png'), ...EDIT } as never);
  const opaque = await client.images.edit({ image: await file(upright, 'a.png'), ...EDIT } as never);
  t.equal(withAlpha.data?.[0]?.b64_json, opaque.data?.[0]?.b64_json, 'alpha dropped: the colour channels as they are');
});

t.test('n > 1 and streamed edit events', async (t) => {
  const ref = await file(await picture(64, 64, 90), 'a.png');
  const res = await client.images.edit({ image: ref, ...EDIT, n: 2 } as never);
  t.equal(res.data?.length, 2);
  t.not(res.data?.[0]?.b64_json, res.data?.[1]?.b64_json, 'seed + i per output');
  const stream = await client.images.edit({ image: await file(await picture(64, 64, 90), 'a.png'), ...EDIT, stream: true, partial_images: 1 } as never);
  const types: string[] = [];
  let completed: { size: string; b64_json: string } | undefined;
  for await (const event of stream as unknown as AsyncIterable<{ type: string; size: string; b64_json: string }>) {
    types.push(event.type);
    if (event.type === 'image_edit.completed') completed = event;
  }
  t.same(types, ['image_edit.partial_image', 'image_edit.completed']);
  t.equal(completed?.size, '64x64');
  t.same((await decode(completed!.b64_json)).width, 64);
});

t.test('pictures the model cannot take: 400 naming the image, nothing stored', async (t) => {
  const edit = async (parts: Array<[string, Buffer, string]>) => {
    const f = new FormData();
    f.append('prompt', 'x');
    f.append('num_inference_steps', '1');
    for (const [field, bytes, name] of parts) f.append(field, new Blob([new Uint8Array(bytes)], { type: 'image/png' }), name);
    return http(`${url}/v1/images/edits`, { method: 'POST', body: f });
  };
  const ok = await picture(64, 64, 0);
  const small = await edit([['image', await picture(48, 80, 0), 'small.png']]);
  t.equal(small.status, 400);
  t.equal(small.body.error.param, 'image');
  t.match(small.body.error.message, /image is too small: 48x80; both sides must be at least 64 pixels/);
  const thin = await edit([['image', await picture(640, 64, 0), 'thin.png']]);
  t.equal(thin.status, 400);
  t.match(thin.body.error.message, /aspect ratio too extreme for FLUX\.2: 640x64/);
  const second = await edit([['image[]', ok, 'a.png'], ['image[]', await picture(64, 32, 0), 'b.png']]);
  t.equal(second.status, 400);
  t.equal(second.body.error.param, 'image[1]', 'the offending image of several is named');
  const five = await edit(Array.from({ length: 5 }, (_, i) => ['image[]', ok, `${i}.png`] as [string, Buffer, string]));
  t.equal(five.status, 400);
  t.match(five.body.error.message, /accepts at most 4 input image\(s\), got 5/);
  const corrupt = await edit([['image', Buffer.from('definitely not a png'), 'x.png']]);
  t.equal(corrupt.status, 400);
  t.match(corrupt.body.error.message, /not a readable image/);
  const listed = await http(`${url}/v1/images/edits`, { method: 'POST', body: (() => { const f = new FormData(); f.append('prompt', 'x'); return f; })() });
  t.equal(listed.status, 400, 'no image at all');
  const r = await client.images.edit({ image: await file(ok, 'a.png'), ...EDIT } as never);
  t.equal(r.data?.length, 1, 'the server keeps serving');
});
