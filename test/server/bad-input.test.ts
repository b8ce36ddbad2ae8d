// Malformed requests against a real server: each gets the right 4xx in the OpenAI error shape, leaves no
// job or file behind, and the server keeps serving. Ends with a real generation to prove the worker is fine.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

import t from 'tap';

import { encodeImage } from '../../lib/encode/image.js';
import { gradientImage } from '../helpers/media.js';
import { API_KEY, http, startServer, waitFor } from '../helpers/server.js';

const MAX_UPLOAD = 64 * 1024;
const server = await startServer({ apiKey: API_KEY, maxUploadBytes: MAX_UPLOAD, logLevel: 'warn' });
t.teardown(() => server.close());
const { url } = server;
const auth = { authorization: `Bearer ${API_KEY}` };
const ZERO_ID = `video_${'0'.repeat(32)}`;

const png = await encodeImage(gradientImage(32, 32), 'png', 75);

interface Case {
  name: string;
  method?: string;
  path: string;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
  status: number;
  code?: string | RegExp;
  param?: string | null;
  message?: RegExp;
}

function form(fields: Record<string, string>, files: Array<[string, Buffer, string]> = []): FormData {
  const f = new FormData();
  for (const [k, v] of Object.entries(fields)) f.append(k, v);
  for (const [k, data, name] of files) f.append(k, new Blob([new Uint8Array(data)], { type: 'image/png' }), name);
  return f;
}

const V = '/v1/videos';
const ok = { prompt: 'a cat', size: '32x32', num_frames: 5, num_inference_steps: 1 };

const cases: Case[] = [
  // JSON bodies of POST /v1/videos
  { name: 'missing prompt', path: V, json: { size: '32x32' }, status: 400, code: 'missing_required_parameter', param: 'prompt' },
  { name: 'prompt of the wrong type', path: V, json: { prompt: 42 }, status: 400, param: 'prompt', message: /expected string/ },
  { name: 'empty prompt', path: V, json: { prompt: '' }, status: 400, param: 'prompt', message: /must not be empty/ },
  { name: 'blank prompt', path: V, json: { prompt: '   \n ' }, status: 400, param: 'prompt' },
  { name: 'prompt too long', path: V, json: { prompt: 'x'.repeat(32001) }, status: 400, param: 'prompt' },
  { name: 'size not WxH', path: V, json: { ...ok, size: 'big' }, status: 400, param: 'size', message: /WIDTHxHEIGHT/ },
  { name: 'size not a multiple of 16', path: V, json: { ...ok, size: '33x32' }, status: 400, param: 'size', message: /multiple of 16/ },
  { name: 'size zero', path: V, json: { ...ok, size: '0x0' }, status: 400, param: 'size', message: /outside 16\.\.4096/ },
  { name: 'huge size', path: V, json: { ...ok, size: '8192x8192' }, status: 400, param: 'size', message: /outside/ },
  { name: 'negative size', path: V, json: { ...ok, size: '-16x32' }, status: 400, param: 'size' },
  { name: 'size as a number', path: V, json: { ...ok, size: 512 }, status: 400, param: 'size', message: /expected string/ },
  { name: 'zero frames', path: V, json: { ...ok, num_frames: 0 }, status: 400, param: 'num_frames' },
  { name: 'huge frame count', path: V, json: { ...ok, num_frames: 100000 }, status: 400, param: 'num_frames' },
  { name: 'fractional frames', path: V, json: { ...ok, num_frames: 2.5 }, status: 400, param: 'num_frames', message: /int/ },
  { name: 'frames as a string in JSON', path: V, json: { ...ok, num_frames: 'five' }, status: 400, param: 'num_frames' },
  { name: 'negative seconds', path: V, json: { prompt: 'x', seconds: -1 }, status: 400, param: 'seconds' },
  { name: 'seconds not a number', path: V, json: { prompt: 'x', seconds: 'forever' }, status: 400, param: 'seconds' },
  { name: 'too many seconds', path: V, json: { prompt: 'x', seconds: 1000 }, status: 400, param: 'seconds' },
  { name: 'seconds x fps over the frame limit', path: V, json: { prompt: 'x', seconds: 100, fps: 60 }, status: 400, param: 'seconds' },
  { name: 'zero fps', path: V, json: { ...ok, fps: 0 }, status: 400, param: 'fps' },
  { name: 'huge fps', path: V, json: { ...ok, fps: 1000 }, status: 400, param: 'fps' },
  { name: 'zero steps', path: V, json: { ...ok, num_inference_steps: 0 }, status: 400, param: 'num_inference_steps' },
  { name: 'huge steps', path: V, json: { ...ok, num_inference_steps: 1e9 }, status: 400, param: 'num_inference_steps' },
  { name: 'negative guidance', path: V, json: { ...ok, guidance_scale: -1 }, status: 400, param: 'guidance_scale' },
  { name: 'guidance as a word', path: V, json: { ...ok, guidance_scale: 'high' }, status: 400, param: 'guidance_scale' },
  { name: 'negative seed', path: V, json: { ...ok, seed: -5 }, status: 400, param: 'seed' },
  { name: 'fractional seed', path: V, json: { ...ok, seed: 1.5 }, status: 400, param: 'seed' },
  { name: 'compression above 100', path: V, json: { ...ok, output_compression: 101 }, status: 400, param: 'output_compression' },
  { name: 'unknown quality preset', path: V, json: { ...ok, output_quality: 'ultra' }, status: 400, param: 'output_quality' },
  { name: 'unknown field', path: V, json: { ...ok, frobnicate: 1 }, status: 400, code: 'unknown_parameter', param: 'frobnicate' },
  { name: 'another model', path: V, json: { ...ok, model: 'sora-2' }, status: 404, code: 'model_not_found', param: 'model' },
  {
    name: 'image sent to a text-only (T2V) model',
    path: V,
    json: { ...ok, input_reference: 'dummy' },
    status: 400,
    param: 'input_reference',
    message: /input_reference is not supported for T2V models/,
  },
  { name: 'reference_url to a T2V model', path: V, json: { ...ok, reference_url: 'https://example.com/a.png' }, status: 400, param: 'input_reference' },
  { name: 'TeaCache requested', path: V, json: { ...ok, enable_teacache: true }, status: 400, param: 'enable_teacache' },
  { name: 'true_cfg_scale', path: V, json: { ...ok, true_cfg_scale: 4 }, status: 400, param: 'true_cfg_scale' },
  { name: 'guidance_scale_2 on a one-expert model', path: V, json: { ...ok, guidance_scale_2: 3 }, status: 400, param: 'guidance_scale_2' },
  { name: 'extra_body not an object', path: V, json: { ...ok, extra_body: [1, 2] }, status: 400, param: 'extra_body' },
  { name: 'bad field inside extra_body', path: V, json: { ...ok, extra_body: { num_frames: -1 } }, status: 400, param: 'num_frames' },
  { name: 'JSON array body', path: V, json: [ok], status: 400, code: 'invalid_json' },
  { name: 'JSON string body', path: V, json: 'make a video', status: 400, code: 'invalid_json' },
  { name: 'truncated JSON', path: V, body: '{"prompt": ', headers: { 'content-type': 'application/json' }, status: 400, code: 'invalid_json' },
  { name: 'empty JSON body', path: V, body: '', headers: { 'content-type': 'application/json' }, status: 400, code: 'invalid_json' },
  { name: 'text/plain body', path: V, body: 'a cat', headers: { 'content-type': 'text/plain' }, status: 400, code: 'invalid_json' },
  {
    name: 'form-urlencoded body',
    path: V,
    body: 'prompt=a+cat',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    status: 415,
    code: 'unsupported_media_type',
  },
  {
    name: 'oversized JSON body',
    path: V,
    json: { prompt: 'x', input_reference: `data:image/png;base64,${'A'.repeat(2 * 1024 * 1024)}` },
    status: 413,
    code: 'payload_too_large',
  },
  // multipart POST /v1/videos
  { name: 'multipart without prompt', path: V, body: form({ size: '32x32' }), status: 400, param: 'prompt' },
  { name: 'multipart frames not a number', path: V, body: form({ prompt: 'x', num_frames: 'abc' }), status: 400, param: 'num_frames' },
  { name: 'multipart repeated field', path: V, body: (() => { const f = form({ prompt: 'x' }); f.append('prompt', 'y'); return f; })(), status: 400, param: 'prompt' },
  { name: 'multipart extra_body not JSON', path: V, body: form({ prompt: 'x', extra_body: '{oops' }), status: 400, param: 'extra_body' },
  {
    name: 'multipart image upload to a T2V model',
    path: V,
    body: form({ prompt: 'x' }, [['input_reference', png, 'a.png']]),
    status: 400,
    param: 'input_reference',
    message: /not supported for T2V/,
  },
  { name: 'multipart unexpected file field', path: V, body: form({ prompt: 'x' }, [['image', png, 'a.png']]), status: 400, code: 'unknown_parameter' },
  {
    name: 'multipart upload over the size limit',
    path: V,
    body: form({ prompt: 'x' }, [['input_reference', Buffer.alloc(MAX_UPLOAD + 1000, 7), 'big.png']]),
    status: 413,
    code: 'payload_too_large',
  },
  {
    name: 'broken multipart body',
    path: V,
    body: '--XYZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na cat\r\n--XY',
    headers: { 'content-type': 'multipart/form-data; boundary=XYZ' },
    status: 400,
    code: 'invalid_multipart',
  },
  {
    name: 'multipart without boundary',
    path: V,
    body: 'prompt=x',
    headers: { 'content-type': 'multipart/form-data' },
    status: 400,
  },
  // images
  { name: 'image generation on a video model', path: '/v1/images/generations', json: { prompt: 'x' }, status: 400, code: 'unsupported_task' },
  { name: 'image generation n too large', path: '/v1/images/generations', json: { prompt: 'x', n: 11 }, status: 400, param: 'n' },
  { name: 'image generation bad format', path: '/v1/images/generations', json: { prompt: 'x', output_format: 'gif' }, status: 400, param: 'output_format' },
  { name: 'image generation partial_images out of range', path: '/v1/images/generations', json: { prompt: 'x', partial_images: 4 }, status: 400, param: 'partial_images' },
  { name: 'image edit as JSON', path: '/v1/images/edits', json: { prompt: 'x' }, status: 400, code: 'invalid_multipart' },
  { name: 'image edit without image', path: '/v1/images/edits', body: form({ prompt: 'x' }), status: 400, param: 'image' },
  { name: 'image edit with a mask', path: '/v1/images/edits', body: form({ prompt: 'x' }, [['image', png, 'a.png'], ['mask', png, 'm.png']]), status: 400, param: 'mask' },
  {
    name: 'corrupt image upload to an edit (text-only model refuses first)',
    path: '/v1/images/edits',
    body: form({ prompt: 'x' }, [['image', Buffer.from('not an image at all'), 'a.png']]),
    status: 400,
  },
  // ids and paths
  { name: 'path traversal in a video id', method: 'GET', path: '/v1/videos/..%2F..%2Fnode-diffusion.sqlite', status: 404, param: 'video_id' },
  { name: 'dot-dot video content', method: 'GET', path: '/v1/videos/..%2Fvideos/content', status: 404 },
  { name: 'malformed video id', method: 'GET', path: '/v1/videos/video_zzz', status: 404, param: 'video_id' },
  { name: 'NUL in an id', method: 'GET', path: '/v1/videos/video_%00', status: 404 },
  { name: 'unknown well-formed video id', method: 'GET', path: `/v1/videos/${ZERO_ID}`, status: 404 },
  { name: 'traversal in an image id', method: 'GET', path: '/v1/images/..%2F..%2Fetc%2Fpasswd/content', status: 404 },
  { name: 'unknown image', method: 'GET', path: `/v1/images/img_${'a'.repeat(32)}/content`, status: 404 },
  { name: 'a video id as an image id', method: 'GET', path: `/v1/images/${ZERO_ID}/content`, status: 404 },
  { name: 'delete unknown video', method: 'DELETE', path: `/v1/videos/${ZERO_ID}`, status: 404 },
  { name: 'content of unknown video', method: 'GET', path: `/v1/videos/${ZERO_ID}/content`, status: 404 },
  { name: 'remix unknown video', path: `/v1/videos/${ZERO_ID}/remix`, json: { prompt: 'x' }, status: 404 },
  // list queries
  { name: 'limit 0', method: 'GET', path: '/v1/videos?limit=0', status: 400, param: 'limit' },
  { name: 'limit 101', method: 'GET', path: '/v1/videos?limit=101', status: 400, param: 'limit' },
  { name: 'limit not a number', method: 'GET', path: '/v1/videos?limit=ten', status: 400, param: 'limit' },
  { name: 'bad order', method: 'GET', path: '/v1/videos?order=sideways', status: 400, param: 'order' },
  { name: 'malformed after', method: 'GET', path: '/v1/videos?after=../x', status: 400, param: 'after' },
  { name: 'unknown after', method: 'GET', path: `/v1/videos?after=${ZERO_ID}`, status: 404, param: 'after' },
  { name: 'unknown query parameter', method: 'GET', path: '/v1/videos?page=2', status: 400, param: 'page' },
  // models, routes
  { name: 'unknown model card', method: 'GET', path: '/v1/models/non_existent_model', status: 404, code: 'model_not_found' },
  { name: 'unknown route', method: 'GET', path: '/v1/chat/completions', status: 404, code: 'unknown_route' },
  { name: 'wrong method', method: 'PUT', path: V, json: ok, status: 404 },
  // auth
  { name: 'missing API key', method: 'GET', path: '/models', headers: { authorization: '' }, status: 401, code: 'missing_api_key' },
  { name: 'wrong API key', method: 'GET', path: '/models', headers: { authorization: 'Bearer sk-wrong' }, status: 401, code: 'invalid_api_key' },
  { name: 'API key without Bearer', method: 'GET', path: '/v1/models', headers: { authorization: API_KEY }, status: 401, code: 'invalid_api_key' },
  { name: 'API key prefix only', path: V, json: ok, headers: { authorization: `Bearer ${API_KEY.slice(0, -1)}` }, status: 401, code: 'invalid_api_key' },
];

async function state() {
  const list = await http(`${url}/v1/videos?limit=100`, { headers: auth });
  const files = (
    await Promise.all(['videos', 'images', 'inputs'].map(async (d) => readdir(join(server.outputPath, d))))
  ).flat();
  return { videos: list.body.data.length as number, files: files.length };
}

t.ok(cases.length >= 50, `${cases.length} malformed requests`);

t.test('each malformed request: right status, OpenAI error shape, nothing stored, server still serves', async (t) => {
  const before = await state();
  for (const c of cases) {
    const headers: Record<string, string> = { ...auth, ...(c.headers ?? {}) };
    if (headers.authorization === '') delete headers.authorization;
    const r = await http(`${url}${c.path}`, {
      method: c.method ?? 'POST',
      headers,
      ...(c.json !== undefined ? { json: c.json } : {}),
      ...(c.body !== undefined ? { body: c.body } : {}),
    });
    t.equal(r.status, c.status, `${c.name}: status ${c.status}`);
    const e = r.body?.error;
    t.ok(
      e && typeof e.message === 'string' && e.message.length > 0 && typeof e.type === 'string' && 'param' in e && 'code' in e,
      `${c.name}: OpenAI error shape ${JSON.stringify(r.body).slice(0, 200)}`,
    );
    if (c.status < 500) t.equal(e?.type, 'invalid_request_error', `${c.name}: type`);
    if (c.code !== undefined) t.match(e?.code, c.code, `${c.name}: code`);
    if (c.param !== undefined) t.equal(e?.param, c.param, `${c.name}: param`);
    if (c.message) t.match(e?.message, c.message, `${c.name}: message`);
    t.ok(r.headers.get('x-request-id'), `${c.name}: request id header`);
    const next = await http(`${url}/models`, { headers: auth });
    t.equal(next.status, 200, `${c.name}: the next valid request is served`);
  }
  t.same(await state(), before, 'no job and no file left behind');
});

t.test('the worker still generates after all that', async (t) => {
  const r = await http(`${url}${V}`, { method: 'POST', headers: auth, json: ok });
  t.equal(r.status, 200);
  const done = await waitFor('the valid job', async () => {
    const v = await http(`${url}${V}/${r.body.id}`, { headers: auth });
    return v.body.status === 'completed' || v.body.status === 'failed' ? v.body : undefined;
  });
  t.equal(done.status, 'completed');
  const c = await http(`${url}${V}/${r.body.id}/content?variant=spritesheet`, { headers: auth });
  t.equal(c.status, 400, 'unknown variant');
  t.equal(c.body.error.param, 'variant');
  const range = await http(`${url}${V}/${r.body.id}/content`, { headers: { ...auth, range: 'bytes=999999999-' } });
  t.equal(range.status, 416, 'unsatisfiable range');
  const remix = await http(`${url}${V}/${r.body.id}/remix`, { method: 'POST', headers: auth, json: {} });
  t.equal(remix.status, 400, 'remix without prompt');
  t.equal(remix.body.error.param, 'prompt');
  const health = await http(`${url}/health`);
  t.equal(health.status, 200, '/health needs no key');
});
