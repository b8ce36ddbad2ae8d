// /v1/images/edits limits and routing on demo:flux2-klein (TI2I), beyond the editing behaviour checked in
// flux2-edits.test.ts: url responses served by the content route, http(s) URLs refused without
// --allow-url-fetch, masks, unsupported formats, truncated and oversized uploads (413), nothing stored by a
// refused request; a TI2I model also generates from text alone and makes no videos.
import { toFile } from 'openai';
import sharp from 'sharp';
import t from 'tap';

import { gradientImage } from '../helpers/media.js';
import { http, startServer } from '../helpers/server.js';

const MAX_UPLOAD = 256 * 1024;
const server = await startServer({ modelPath: 'demo:flux2-klein', maxUploadBytes: MAX_UPLOAD });
t.teardown(() => server.close());
const { client, url } = server;

async function pngOf(width: number, height: number): Promise<Buffer> {
  const g = gradientImage(width, height);
  return sharp(g.data, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

const blob = (b: Buffer, type = 'image/png') => new Blob([new Uint8Array(b)], { type });

async function postEdit(build: (f: FormData) => void | Promise<void>) {
  const f = new FormData();
  f.append('prompt', 'x');
  f.append('num_inference_steps', '1');
  await build(f);
  return http(`${url}/v1/images/edits`, { method: 'POST', body: f });
}

t.test('url responses, webp output, served by /v1/images/{id}/content', async (t) => {
  const r = await postEdit(async (f) => {
    f.append('image', blob(await pngOf(96, 64)), 'a.png');
    f.append('response_format', 'url');
    f.append('output_format', 'webp');
  });
  t.equal(r.status, 200);
  t.equal(r.body.output_format, 'webp');
  t.match(r.body.data[0].url, new RegExp(`^${url}/v1/images/img_[0-9a-f]{32}/content$`));
  const got = await http(r.body.data[0].url);
  t.equal(got.headers.get('content-type'), 'image/webp');
  const meta = await sharp(got.bytes).metadata();
  t.same([meta.format, meta.width, meta.height], ['webp', 96, 64]);
  const inputs = await import('node:fs/promises').then((fs) => fs.readdir(server.app.runtime.layout.inputs));
  t.same(inputs, [], "an edit's reference images are removed once it completed");
});

t.test('refused uploads: right 4xx, nothing stored, the server keeps serving', async (t) => {
  const before = server.app.runtime.store.countByKindAndStatus();
  const web = await postEdit((f) => f.append('url', 'https://example.com/cat.png'));
  t.equal(web.status, 400);
  t.equal(web.body.error.code, 'url_fetch_disabled');
  const mask = await postEdit(async (f) => {
    f.append('image', blob(await pngOf(64, 64)), 'a.png');
    f.append('mask', blob(await pngOf(64, 64)), 'm.png');
  });
  t.equal(mask.status, 400);
  t.equal(mask.body.error.param, 'mask');
  const gif = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#123456' } }).gif().toBuffer();
  const g = await postEdit((f) => f.append('image', blob(gif, 'image/gif'), 'a.gif'));
  t.equal(g.status, 400);
  t.match(g.body.error.message, /unsupported format 'gif' \(png, jpeg, webp accepted\)/);
  const truncated = await postEdit(async (f) => f.append('image', blob((await pngOf(96, 96)).subarray(0, 120)), 't.png'));
  t.equal(truncated.status, 400, 'truncated PNG');
  t.equal(truncated.body.error.param, 'image');
  const big = await postEdit((f) => f.append('image', blob(Buffer.alloc(MAX_UPLOAD + 1, 3)), 'big.png'));
  t.equal(big.status, 413);
  t.equal(big.body.error.code, 'payload_too_large');
  const stray = await postEdit(async (f) => f.append('input_reference', blob(await pngOf(64, 64)), 'a.png'));
  t.equal(stray.status, 400, 'a file under another field name');
  t.equal(stray.body.error.code, 'unknown_parameter');
  t.same(server.app.runtime.store.countByKindAndStatus(), before, 'no job stored');
  const ok = await client.images.edit({ image: await toFile(await pngOf(64, 64), 'ok.png'), prompt: 'fine', num_inference_steps: 1 } as never);
  t.equal(ok.data?.length, 1);
});

t.test('a TI2I model also generates from text alone, and makes no videos', async (t) => {
  const r = await client.images.generate({ prompt: 'text only', size: '32x32', num_inference_steps: 1 } as never);
  t.equal((await sharp(Buffer.from(r.data?.[0]?.b64_json as string, 'base64')).metadata()).width, 32);
  await t.rejects(client.videos.create({ prompt: 'x' }), /^400 .*text-image-to-image model \(TI2I\)/);
});
