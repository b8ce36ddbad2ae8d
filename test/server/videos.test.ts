// The /v1/videos family through the official openai SDK against a real server running demo:wan:
// create (multipart from the SDK, JSON with fetch), retrieve, list with paging, content (the MP4 decodes to
// the requested frames and size; the thumbnail is a WebP), remix (same seed: same frames), delete and cancel.
import { existsSync } from 'node:fs';

import OpenAI from 'openai';
import sharp from 'sharp';
import t from 'tap';

import { decodeMp4 } from '../helpers/media.js';
import { http, startServer, waitFor } from '../helpers/server.js';

const server = await startServer({ apiKey: null });
t.teardown(() => server.close());
const { client, url } = server;

type Video = OpenAI.Videos.Video & { num_frames: number; fps: number; seed: number; num_inference_steps: number };

/** Tiny, fast generation settings passed as extra (non-OpenAI) fields. */
const TINY = { size: '48x32', num_frames: 5, num_inference_steps: 2 };

async function completed(id: string): Promise<Video> {
  return waitFor(`video ${id} to finish`, async () => {
    const v = (await client.videos.retrieve(id)) as Video;
    if (v.status === 'failed') throw new Error(`video failed: ${JSON.stringify(v.error)}`);
    return v.status === 'completed' ? v : undefined;
  });
}

t.test('create -> retrieve -> content, through the SDK', async (t) => {
  const created = (await client.videos.create({ prompt: 'a red fox in the snow', ...TINY } as never)) as Video;
  t.match(created.id, /^video_[0-9a-f]{32}$/);
  t.equal(created.object, 'video');
  t.equal(created.model, 'demo:wan');
  t.ok(['queued', 'in_progress'].includes(created.status), `status ${created.status}`);
  t.equal(created.size, '48x32');
  t.equal(created.num_frames, 5);
  t.equal(created.seed, 1024, 'default seed');
  t.equal(created.seconds, '0.31', '5 frames at 16 fps');
  t.equal(created.error, null);
  t.equal(created.completed_at, null);

  const done = await completed(created.id);
  t.equal(done.progress, 100);
  t.type(done.completed_at, 'number');
  t.ok((done.completed_at as number) >= done.created_at);
  t.ok((done as Video & { inference_time_s: number }).inference_time_s > 0, 'inference time reported');
  t.equal(done.expires_at, null, 'kept without --output-retention');

  const res = await client.videos.downloadContent(created.id);
  t.equal(res.headers.get('content-type'), 'video/mp4');
  const mp4 = Buffer.from(await res.arrayBuffer());
  t.equal(mp4.toString('latin1', 4, 8), 'ftyp');
  const v = await decodeMp4(mp4);
  t.equal(v.codec, 'h264');
  t.equal(v.pixFmt, 'yuv420p');
  t.equal(v.width, 48);
  t.equal(v.height, 32);
  t.equal(v.frames.length, 5, 'the requested frame count');
  t.equal(v.fps, 16, "the model's fps");
  t.ok(v.boxes.indexOf('moov') < v.boxes.indexOf('mdat'), 'faststart');

  const thumb = await client.videos.downloadContent(created.id, { variant: 'thumbnail' });
  t.equal(thumb.headers.get('content-type'), 'image/webp');
  const meta = await sharp(Buffer.from(await thumb.arrayBuffer())).metadata();
  t.equal(meta.format, 'webp');
  t.equal(meta.width, 48);
  t.equal(meta.height, 32);

  // byte ranges for players
  const part = await http(`${url}/v1/videos/${created.id}/content`, { headers: { range: 'bytes=0-7' } });
  t.equal(part.status, 206);
  t.equal(part.headers.get('content-range'), `bytes 0-7/${mp4.length}`);
  t.same(part.bytes, mp4.subarray(0, 8));
});

t.test('JSON create with seconds, fps and extra_body; output quality', async (t) => {
  const r = await http(`${url}/v1/videos`, {
    method: 'POST',
    json: { prompt: 'waves', size: '32x32', seconds: '0.5', extra_body: { fps: 8, num_inference_steps: 1 }, output_quality: 'low' },
  });
  t.equal(r.status, 200, 'created');
  t.equal(r.body.fps, 8);
  t.equal(r.body.num_frames, 5, '0.5 s x 8 fps = 4 frames, rounded to 4k+1 = 5');
  t.equal(r.body.num_inference_steps, 1);
  await completed(r.body.id);
  const v = await decodeMp4(Buffer.from(await (await client.videos.downloadContent(r.body.id)).arrayBuffer()));
  t.equal(v.frames.length, 5);
  t.equal(v.fps, 8);
  // With neither num_frames nor seconds the model default applies (demo:wan: 17 frames).
  const d = await http(`${url}/v1/videos`, { method: 'POST', json: { prompt: 'default length', size: '32x32', num_inference_steps: 1 } });
  t.equal(d.body.num_frames, 17);
  await completed(d.body.id);
});

t.test('progress advances with denoising steps', async (t) => {
  const created = (await client.videos.create({ prompt: 'slow', size: '64x64', num_frames: 9, num_inference_steps: 40 } as never)) as Video;
  const seen: number[] = [];
  await waitFor('completion while sampling progress', async () => {
    const v = (await client.videos.retrieve(created.id)) as Video;
    if (v.status === 'in_progress') seen.push(v.progress);
    return v.status === 'completed' ? v : undefined;
  });
  const distinct = [...new Set(seen)];
  t.ok(distinct.length >= 3, `saw ${distinct.length} distinct progress values: ${distinct.join(',')}`);
  t.same(distinct, [...distinct].sort((a, b) => a - b), 'never goes back');
  t.ok(distinct.every((p) => p >= 0 && p < 100), 'below 100 until completed');
});

t.test('remix keeps parameters and seed; same prompt gives the same frames', async (t) => {
  const src = (await client.videos.create({ prompt: 'a lighthouse', ...TINY, seed: 77 } as never)) as Video;
  await completed(src.id);
  const same = (await client.videos.remix(src.id, { prompt: 'a lighthouse' })) as Video;
  const other = (await client.videos.remix(src.id, { prompt: 'a volcano' })) as Video;
  for (const r of [same, other]) {
    t.equal(r.remixed_from_video_id, src.id);
    t.equal(r.seed, 77);
    t.equal(r.size, '48x32');
    t.equal(r.num_frames, 5);
    t.equal(r.num_inference_steps, 2);
  }
  t.equal(other.prompt, 'a volcano');
  await completed(same.id);
  await completed(other.id);
  const frames = async (id: string) => (await decodeMp4(Buffer.from(await (await client.videos.downloadContent(id)).arrayBuffer()))).frames;
  const [a, b, c] = await Promise.all([frames(src.id), frames(same.id), frames(other.id)]);
  t.same(b, a, 'same prompt and seed: identical frames');
  t.notSame(c, a, 'another prompt: other frames');
});

t.test('list: order, limit, after, auto-paging', async (t) => {
  const ids: string[] = [];
  for (let i = 0; i < 3; ++i) ids.push(((await client.videos.create({ prompt: `list ${i}`, ...TINY, num_inference_steps: 1 } as never)) as Video).id);
  const page = await client.videos.list({ limit: 2, order: 'desc' });
  t.same(page.data.map((v) => v.id), [ids[2], ids[1]], 'newest first');
  t.equal(page.has_more, true);
  const body = (await http(`${url}/v1/videos?limit=2&order=desc`)).body;
  t.equal(body.object, 'list');
  t.equal(body.first_id, ids[2]);
  t.equal(body.last_id, ids[1]);
  const asc = await client.videos.list({ order: 'asc', after: ids[0], limit: 10 });
  t.same(asc.data.map((v) => v.id), [ids[1], ids[2]]);
  const all: string[] = [];
  for await (const v of client.videos.list({ limit: 1, order: 'asc' })) all.push(v.id);
  t.same(all.slice(-3), ids, 'the SDK pages through every video with after=last_id');
  t.equal(new Set(all).size, all.length, 'no duplicates across pages');
  for (const id of ids) await completed(id);
});

t.test('delete: completed video and its files', async (t) => {
  const v = (await client.videos.create({ prompt: 'to delete', ...TINY } as never)) as Video;
  await completed(v.id);
  const file = server.app.runtime.layout.videoFile(v.id);
  t.ok(existsSync(file));
  const del = await client.videos.delete(v.id);
  t.same(del, { id: v.id, object: 'video.deleted', deleted: true });
  t.notOk(existsSync(file), 'mp4 removed');
  t.notOk(existsSync(server.app.runtime.layout.thumbnailFile(v.id)), 'thumbnail removed');
  await t.rejects(client.videos.retrieve(v.id), /^404 /);
  await t.rejects(client.videos.delete(v.id), /^404 /, 'deleting twice: 404');
});

t.test('delete cancels a running job at its next step, and the next job runs', async (t) => {
  const long = (await client.videos.create({ prompt: 'long', size: '64x64', num_frames: 9, num_inference_steps: 400 } as never)) as Video;
  const queued = (await client.videos.create({ prompt: 'queued behind', ...TINY } as never)) as Video;
  await waitFor('the long job to be denoising', async () => {
    const v = await client.videos.retrieve(long.id);
    return v.status === 'in_progress' && v.progress > 5 ? v : undefined;
  });
  t.equal((await client.videos.retrieve(queued.id)).status, 'queued', 'FIFO: the second job waits');
  const t0 = Date.now();
  await client.videos.delete(long.id);
  await t.rejects(client.videos.retrieve(long.id), /^404 /);
  await completed(queued.id);
  t.ok(Date.now() - t0 < 20_000, `the queued job finished ${Date.now() - t0} ms after the cancel (400 steps would take far longer)`);
  t.notOk(existsSync(server.app.runtime.layout.videoFile(long.id)), 'the cancelled job left no file');
  const metrics = (await http(`${url}/metrics`)).body as string;
  t.match(metrics, /node_diffusion_jobs_finished_total\{kind="video",outcome="cancelled"\} [1-9]/);
});

t.test('a queued job can be deleted before it runs', async (t) => {
  const blocker = (await client.videos.create({ prompt: 'blocker', size: '64x64', num_frames: 9, num_inference_steps: 30 } as never)) as Video;
  const q = (await client.videos.create({ prompt: 'never runs', ...TINY } as never)) as Video;
  t.equal((await client.videos.retrieve(q.id)).status, 'queued');
  await client.videos.delete(q.id);
  await t.rejects(client.videos.retrieve(q.id), /^404 /);
  await completed(blocker.id);
  const content = await http(`${url}/v1/videos/${q.id}/content`);
  t.equal(content.status, 404);
});

t.test('content is 409 until completed', async (t) => {
  const v = (await client.videos.create({ prompt: 'wait', size: '64x64', num_frames: 9, num_inference_steps: 30 } as never)) as Video;
  const early = await http(`${url}/v1/videos/${v.id}/content`);
  t.equal(early.status, 409);
  t.equal(early.body.error.code, 'video_not_ready');
  t.equal(early.body.error.type, 'invalid_request_error');
  await completed(v.id);
  t.equal((await http(`${url}/v1/videos/${v.id}/content?variant=thumbnail`)).status, 200);
});
