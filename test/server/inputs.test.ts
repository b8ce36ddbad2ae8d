// Reference images given by URL: data: URLs, http(s) fetching (off unless allowed) against a real local HTTP
// server, size limits, and decoding with the upload bounds.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import t from 'tap';

import { encodeImage } from '../../lib/encode/image.js';
import { ApiError } from '../../lib/server/errors.js';
import { decodeInput, imageBytesFromUrl, type InputLimits } from '../../lib/server/inputs.js';
import { gradientImage } from '../helpers/media.js';

const png = await encodeImage(gradientImage(40, 24), 'png', 75);
const LIMITS: InputLimits = { allowUrlFetch: true, maxBytes: 64 * 1024, maxPixels: 4096 * 4096 };
const OFF: InputLimits = { ...LIMITS, allowUrlFetch: false };

const http: Server = createServer((req, res) => {
  switch (req.url) {
    case '/a.png':
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': png.length });
      res.end(png);
      break;
    case '/moved':
      res.writeHead(302, { location: '/a.png' });
      res.end();
      break;
    case '/big-declared':
      res.writeHead(200, { 'content-length': 10 * 1024 * 1024 });
      res.end();
      break;
    case '/big-chunked':
      res.writeHead(200, { 'content-type': 'image/png' });
      for (let i = 0; i < 20; ++i) res.write(Buffer.alloc(8 * 1024, 1));
      res.end();
      break;
    default:
      res.writeHead(404);
      res.end('missing');
  }
});
await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
t.teardown(() => new Promise<void>((r) => http.close(() => r())));

async function apiError(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error('expected an ApiError');
}

t.test('data: URLs', async (t) => {
  const bytes = await imageBytesFromUrl(`data:image/png;base64,${png.toString('base64')}`, 'url', OFF);
  t.same(bytes, png, 'decoded without fetching');
  const img = await decodeInput(bytes, 'url', OFF);
  t.equal(img.width, 40);
  t.equal(img.height, 24);
  let e = await apiError(imageBytesFromUrl('data:text/plain;base64,aGVsbG8=', 'url', OFF));
  t.equal(e.status, 400);
  t.match(e.message, /media type 'text\/plain', expected an image/);
  e = await apiError(imageBytesFromUrl('data:image/png;base64,@@@@', 'url[1]', OFF));
  t.equal(e.param, 'url[1]');
  t.match(e.message, /not valid base64/);
  e = await apiError(imageBytesFromUrl('data:nonsense', 'url', OFF));
  t.match(e.message, /malformed data: URL/);
  e = await apiError(imageBytesFromUrl(`data:image/png;base64,${'A'.repeat(200_000)}`, 'url', OFF));
  t.equal(e.status, 413);
});

t.test('http(s) URLs are refused unless fetching is allowed', async (t) => {
  const e = await apiError(imageBytesFromUrl(`${base}/a.png`, 'input_reference', OFF));
  t.equal(e.status, 400);
  t.equal(e.code, 'url_fetch_disabled');
  t.match(e.message, /--allow-url-fetch/);
  for (const u of ['file:///etc/passwd', 'ftp://example.com/a.png', '/etc/passwd', 'a.png']) {
    const x = await apiError(imageBytesFromUrl(u, 'url', LIMITS));
    t.match(x.message, /unsupported image URL/, u);
  }
});

t.test('fetching when allowed: redirects, HTTP errors, size limits', async (t) => {
  t.same(await imageBytesFromUrl(`${base}/a.png`, 'url', LIMITS), png);
  t.same(await imageBytesFromUrl(`${base}/moved`, 'url', LIMITS), png, 'redirect followed');
  let e = await apiError(imageBytesFromUrl(`${base}/nope.png`, 'url', LIMITS));
  t.equal(e.status, 400);
  t.match(e.message, /returned HTTP 404/);
  e = await apiError(imageBytesFromUrl(`${base}/big-declared`, 'url', LIMITS));
  t.equal(e.status, 413, 'declared length over the limit');
  e = await apiError(imageBytesFromUrl(`${base}/big-chunked`, 'url', LIMITS));
  t.equal(e.status, 413, 'streamed body over the limit');
  e = await apiError(imageBytesFromUrl('http://127.0.0.1:1/a.png', 'url', LIMITS));
  t.equal(e.status, 400);
  t.match(e.message, /could not fetch/);
});

t.test('decodeInput bounds', async (t) => {
  let e = await apiError(decodeInput(Buffer.alloc(LIMITS.maxBytes + 1), 'image', LIMITS));
  t.equal(e.status, 413);
  await t.rejects(decodeInput(Buffer.from('garbage'), 'image[2]', LIMITS), { name: 'RequestError', param: 'image[2]' });
  const tiny = await encodeImage(gradientImage(8, 8), 'png', 75);
  await t.rejects(decodeInput(tiny, 'image', LIMITS), { message: /too small: 8x8, each side must be at least 16/ });
  await t.rejects(decodeInput(png, 'image', { ...LIMITS, maxPixels: 100 }), { message: /too large: 40x24 exceeds 100 pixels/ });
  e = new ApiError(400, 'x');
  t.equal(e.type, 'invalid_request_error');
});
