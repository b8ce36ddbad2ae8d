// /v1/images through the official openai SDK against a real server running demo:zimage (text-to-image):
// b64_json and url responses, n > 1, every output format (decoded, size checked), quality, determinism,
// streamed partial images and completion events, cancellation when the client goes away, task checks.
import sharp from 'sharp';
import t from 'tap';

import { http, startServer, waitFor } from '../helpers/server.js';

const server = await startServer({ modelPath: 'demo:zimage' });
t.teardown(() => server.close());
const { client, url } = server;

const SMALL = { size: '48x32', num_inference_steps: 2 } as const;

async function decode(b64OrBytes: string | Buffer) {
  const buf = typeof b64OrBytes === 'string' ? Buffer.from(b64OrBytes, 'base64') : b64OrBytes;
  const { data, info } = await sharp(buf).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const meta = await sharp(buf).metadata();
  return { format: meta.format, width: info.width, height: info.height, pixels: data };
}

t.test('b64_json (default), PNG by default, size honoured', async (t) => {
  const res = await client.images.generate({ prompt: 'a lighthouse at dusk', ...SMALL } as never);
  t.type(res.created, 'number');
  t.equal(res.data?.length, 1);
  t.equal(res.output_format, 'png');
  t.equal(res.size, '48x32');
  const item = res.data?.[0];
  t.equal(item?.revised_prompt, 'a lighthouse at dusk');
  const img = await decode(item?.b64_json as string);
  t.equal(img.format, 'png');
  t.equal(img.width, 48);
  t.equal(img.height, 32);
  const ext = res as unknown as { id: string; inference_time_s: number };
  t.match(ext.id, /^imgreq_[0-9a-f]{32}$/);
  t.ok(ext.inference_time_s > 0);
});

t.test('n > 1 gives distinct images (seed + i); the same seed repeats exactly', async (t) => {
  const a = await client.images.generate({ prompt: 'a fox', n: 3, seed: 5, ...SMALL } as never);
  t.equal(a.data?.length, 3);
  const imgs = await Promise.all((a.data ?? []).map((d) => decode(d.b64_json as string)));
  t.notSame(imgs[0]?.pixels, imgs[1]?.pixels);
  t.notSame(imgs[1]?.pixels, imgs[2]?.pixels);
  const b = await client.images.generate({ prompt: 'a fox', n: 1, seed: 6, ...SMALL } as never);
  t.same((await decode(b.data?.[0]?.b64_json as string)).pixels, imgs[1]?.pixels, 'output 1 of seed 5 is the image of seed 6');
  const c = await client.images.generate({ prompt: 'a fox', n: 1, seed: 5, ...SMALL } as never);
  t.equal(c.data?.[0]?.b64_json, a.data?.[0]?.b64_json, 'identical bytes for the same request');
});

t.test('every output format decodes; quality changes JPEG size; PNG ignores it', async (t) => {
  for (const fmt of ['png', 'jpeg', 'webp'] as const) {
    const r = await client.images.generate({ prompt: 'a red barn', output_format: fmt, ...SMALL } as never);
    t.equal(r.output_format, fmt);
    const img = await decode(r.data?.[0]?.b64_json as string);
    t.equal(img.format, fmt, `${fmt} bytes`);
    t.equal(img.width, 48);
    t.equal(img.height, 32);
  }
  const size = async (extra: object) =>
    Buffer.from((await client.images.generate({ prompt: 'a red barn', output_format: 'jpeg', ...SMALL, ...extra } as never)).data?.[0]
      ?.b64_json as string, 'base64').length;
  const low = await size({ output_compression: 5 });
  const high = await size({ output_compression: 100 });
  t.ok(high > low, `JPEG quality 100 (${high} B) larger than 5 (${low} B)`);
  t.equal(await size({ output_quality: 'low', output_compression: 5 }), low, 'output_compression wins over output_quality');
  const png = async (extra: object) =>
    (await client.images.generate({ prompt: 'a red barn', output_format: 'png', ...SMALL, ...extra } as never)).data?.[0]?.b64_json;
  t.equal(await png({ output_compression: 5 }), await png({ output_compression: 100 }), 'PNG is lossless');
});

t.test('response_format url: served by /v1/images/{id}/content', async (t) => {
  const r = await client.images.generate({ prompt: 'a kite', response_format: 'url', n: 2, output_format: 'webp', ...SMALL } as never);
  t.equal(r.data?.length, 2);
  for (const d of r.data ?? []) {
    t.equal(d.b64_json, undefined);
    t.match(d.url, new RegExp(`^${url}/v1/images/img_[0-9a-f]{32}/content$`));
    const got = await http(d.url as string);
    t.equal(got.status, 200);
    t.equal(got.headers.get('content-type'), 'image/webp');
    const img = await decode(got.bytes);
    t.equal(img.format, 'webp');
    t.equal(img.width, 48);
  }
});

t.test('stream: partial images while denoising, then completed', async (t) => {
  const stream = await client.images.generate({
    prompt: 'a windmill',
    stream: true,
    partial_images: 2,
    seed: 11,
    size: '48x32',
    num_inference_steps: 6,
  } as never);
  const events: Array<{ type: string; b64_json: string; partial_image_index?: number; size: string; output_format: string }> = [];
  for await (const ev of stream as unknown as AsyncIterable<(typeof events)[number]>) events.push(ev);
  t.same(
    events.map((e) => e.type),
    ['image_generation.partial_image', 'image_generation.partial_image', 'image_generation.completed'],
  );
  t.same(events.slice(0, 2).map((e) => e.partial_image_index), [0, 1]);
  const decoded = await Promise.all(events.map((e) => decode(e.b64_json)));
  for (const [i, d] of decoded.entries()) {
    t.equal(d.width, 48, `event ${i} width`);
    t.equal(d.height, 32, `event ${i} height`);
    t.equal(events[i]?.size, '48x32');
    t.equal(events[i]?.output_format, 'png');
  }
  t.notSame(decoded[0]?.pixels, decoded[2]?.pixels, 'a preview is not the final image');
  const plain = await client.images.generate({ prompt: 'a windmill', seed: 11, size: '48x32', num_inference_steps: 6 } as never);
  t.equal(events[2]?.b64_json, plain.data?.[0]?.b64_json, 'the streamed final image equals the non-streamed one');

  // raw SSE framing
  const raw = await fetch(`${url}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'sse', stream: true, ...SMALL }),
  });
  t.match(raw.headers.get('content-type'), /^text\/event-stream/);
  const text = await raw.text();
  t.match(text, /^event: image_generation\.completed\ndata: \{.*\}\n\n$/s, 'one completed event without partials');
});

t.test('a client that goes away cancels its image job', async (t) => {
  const ac = new AbortController();
  const pending = fetch(`${url}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'never delivered', size: '64x64', num_inference_steps: 1000 }),
    signal: ac.signal,
  }).catch((e: Error) => e);
  const rt = server.app.runtime;
  await waitFor('the job to run', () => (rt.store.jobsWithStatus('in_progress').length > 0 ? true : undefined));
  ac.abort();
  t.type(await pending, Error);
  await waitFor('the job to be cancelled and removed', () =>
    rt.store.jobsWithStatus('in_progress').length === 0 && rt.store.jobsWithStatus('queued').length === 0 ? true : undefined,
  );
  const metrics = (await http(`${url}/metrics`)).body as string;
  t.match(metrics, /node_diffusion_jobs_finished_total\{kind="image",outcome="cancelled"\} 1\b/);
  const r = await client.images.generate({ prompt: 'still works', ...SMALL } as never);
  t.equal(r.data?.length, 1, 'the next request is served');
});

t.test('a streaming client that goes away mid-stream cancels its job', async (t) => {
  const ac = new AbortController();
  const res = await fetch(`${url}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'walk away', stream: true, partial_images: 3, size: '64x64', num_inference_steps: 1000 }),
    signal: ac.signal,
  });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const first = await reader.read();
  t.match(Buffer.from(first.value ?? []).toString(), /^event: image_generation\.partial_image\n/, 'a preview arrived');
  ac.abort();
  const rt = server.app.runtime;
  await waitFor('the streamed job to be cancelled', () => (rt.store.jobsWithStatus('in_progress').length === 0 ? true : undefined));
  const metrics = (await http(`${url}/metrics`)).body as string;
  t.match(metrics, /node_diffusion_jobs_finished_total\{kind="image",outcome="cancelled"\} 2\b/);
  const r = await client.images.generate({ prompt: 'still here', ...SMALL } as never);
  t.equal(r.data?.length, 1, 'the server keeps serving');
});

t.test('task checks on an image model', async (t) => {
  const v = await http(`${url}/v1/videos`, { method: 'POST', json: { prompt: 'x' } });
  t.equal(v.status, 400);
  t.equal(v.body.error.code, 'unsupported_task');
  t.match(v.body.error.message, /text-to-image model \(T2I\); use POST \/v1\/images\/generations/);
  const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: '#808080' } }).png().toBuffer();
  const f = new FormData();
  f.append('prompt', 'edit me');
  f.append('image', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'a.png');
  const e = await http(`${url}/v1/images/edits`, { method: 'POST', body: f });
  t.equal(e.status, 400);
  t.equal(e.body.error.param, 'image');
  t.match(e.body.error.message, /takes no input images/);
  const tr = await http(`${url}/v1/images/generations`, { method: 'POST', json: { prompt: 'x', background: 'transparent' } });
  t.equal(tr.status, 400);
  t.equal(tr.body.error.param, 'background');
  const pi = await http(`${url}/v1/images/generations`, { method: 'POST', json: { prompt: 'x', partial_images: 2 } });
  t.equal(pi.status, 400, 'partial_images without stream');
  t.match((await http(`${url}/models`)).body, { task_type: 'T2I', pipeline_class: 'ZImagePipeline' });
});

t.test('shutdown answers image requests in flight (503) within the shutdown timeout', async (t) => {
  const s = await startServer({ modelPath: 'demo:zimage', shutdownTimeoutMs: 300 });
  const post = (prompt: string) =>
    http(`${s.url}/v1/images/generations`, { method: 'POST', json: { prompt, size: '64x64', num_inference_steps: 1000 } });
  const running = post('running');
  await waitFor('the job to run', () => (s.app.runtime.store.jobsWithStatus('in_progress').length > 0 ? true : undefined));
  const queued = post('queued');
  const streamed = fetch(`${s.url}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'streamed', stream: true, size: '64x64', num_inference_steps: 1000 }),
  });
  await waitFor('two jobs to queue', () => (s.app.runtime.queueDepth === 2 ? true : undefined));
  const sse = await streamed;
  t.equal(sse.status, 200, 'the event stream is open while queued (headers flushed before any event)');
  const t0 = Date.now();
  await s.close();
  t.ok(Date.now() - t0 < 10_000, `closed in ${Date.now() - t0} ms`);
  const [r, q] = await Promise.all([running, queued]);
  t.equal(r.status, 503);
  t.equal(r.body.error.code, 'server_shutdown');
  t.equal(q.status, 503);
  t.match(q.body.error.message, /shut down before this request ran/);
  const text = await sse.text();
  t.match(text, /^event: error\ndata: \{"error":\{"message":"the server shut down before this request ran","type":"server_error"/);
});
