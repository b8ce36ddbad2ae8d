// The hub client against a local fake hub (test/helpers/fake-hub.ts): cache layout shared with
// huggingface_hub, file selection, cache hits without requests, offline mode, tokens, errors, resumed and
// corrupted transfers.
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { main } from '../../lib/cli/main.js';
import { downloadModel, HubError, resolveModelPath, selectPipelineFiles, type ModelDownloadOptions } from '../../lib/io/hub/index.js';
import { FakeHub, fakePipelineRepo, gitBlobId, safetensorsBytes, sha256 } from '../helpers/fake-hub.js';

for (const k of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_TOKEN_PATH', 'HF_ENDPOINT', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE'])
  delete process.env[k];
const scratch = mkdtempSync(join(tmpdir(), 'nd-hub-'));
process.env.HF_HOME = join(scratch, 'default-hf-home'); // never the user's real cache or token
t.teardown(() => rmSync(scratch, { recursive: true, force: true }));

const COMMIT = 'a'.repeat(40);
const COMMIT_V0 = 'b'.repeat(40);
const GATED_COMMIT = 'c'.repeat(40);
const CHUNK = 65536;

const hub = new FakeHub();
const tiny = fakePipelineRepo('acme/tiny-pipe', COMMIT);
hub.add({ ...tiny.repo, refs: { 'v1.0': COMMIT } });
const old = fakePipelineRepo('acme/tiny-pipe-old', COMMIT_V0);
hub.add(old.repo);
hub.add({ ...fakePipelineRepo('acme/gated-pipe', GATED_COMMIT).repo, gatedToken: 'hf_secret' });
hub.add({
  id: 'acme/not-a-pipeline',
  commit: 'd'.repeat(40),
  files: [
    { path: 'config.json', lfs: false, content: Buffer.from('{}') },
    { path: 'model.safetensors', lfs: true, content: safetensorsBytes(100, 9) },
  ],
});
hub.add({
  ...fakePipelineRepo('acme/huge', 'e'.repeat(40)).repo,
  listedSize: { 'transformer/diffusion_pytorch_model.safetensors': 2 ** 50 },
});

t.before(() => hub.start());
t.teardown(() => hub.close());
t.beforeEach(() => {
  hub.log.length = 0;
  hub.misbehave.clear();
  hub.failApi = null;
});

let dirCount = 0;
const freshCache = () => {
  const d = join(scratch, `cache-${++dirCount}`);
  mkdirSync(d);
  return d;
};

const TUNING = { chunkSize: CHUNK, connections: 4, idleTimeoutMs: 5000, retry: { maxRetries: 3, baseDelayMs: 5, maxDelayMs: 20 } };
const options = (cacheDir: string, extra: ModelDownloadOptions = {}): ModelDownloadOptions => ({
  endpoint: hub.hubUrl,
  cacheDir,
  transfer: TUNING,
  offline: false,
  ...extra,
});

const contentOf = (path: string) => tiny.repo.files.find((f) => f.path === path)!.content;
const etagOf = (path: string) => {
  const f = tiny.repo.files.find((x) => x.path === path)!;
  return f.lfs ? sha256(f.content) : gitBlobId(f.content);
};
const repoDir = (cacheDir: string, id = 'acme/tiny-pipe') => join(cacheDir, `models--${id.replace('/', '--')}`);
const filesUnder = (dir: string, prefix = ''): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(join(dir, e.name), `${prefix}${e.name}/`) : [`${prefix}${e.name}`],
  );

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, ...fragments: (string | RegExp)[]) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof HubError, `rejects with a HubError (got ${String(err)})`);
  if (!(err instanceof HubError)) return;
  t.equal(err.code, code, `code ${code}: ${err.message}`);
  for (const f of fragments) t.match(err.message, f);
}

// 23 files + 7 folders listed 4 per page
const TREE_PAGES = Math.ceil((23 + 7) / 4);

t.test('full download: selected files only, huggingface_hub cache layout, ranged chunks', async (t) => {
  const cacheDir = freshCache();
  const progress: number[] = [];
  const result = await downloadModel('acme/tiny-pipe', options(cacheDir, { onProgress: (p) => progress.push(p.bytesDone) }));
  const root = repoDir(cacheDir);
  const snap = join(root, 'snapshots', COMMIT);
  t.equal(result.path, snap);
  t.equal(result.commit, COMMIT);
  t.same(filesUnder(snap).sort(), [...tiny.needed].sort(), 'exactly the needed files are in the snapshot');
  for (const path of tiny.needed) {
    const link = join(snap, path);
    t.ok(lstatSync(link).isSymbolicLink(), `${path} is a symlink`);
    const depth = path.split('/').length;
    t.equal(readlinkSync(link), `${'../'.repeat(depth + 1)}blobs/${etagOf(path)}`, `${path} links relatively to its blob`);
    t.same(readFileSync(link), contentOf(path), `${path} has the served bytes`);
  }
  t.same(readdirSync(join(root, 'blobs')).sort(), tiny.needed.map(etagOf).sort(), 'one blob per file, named by etag, no leftovers');
  t.equal(readFileSync(join(root, 'refs', 'main'), 'utf8'), COMMIT, 'refs/main holds the commit');
  const tree = JSON.parse(readFileSync(join(root, 'trees', `${COMMIT}.json`), 'utf8'));
  t.equal(tree.format_version, 1);
  t.same(tree.files['transformer/diffusion_pytorch_model.safetensors'], {
    size: contentOf('transformer/diffusion_pytorch_model.safetensors').length,
    blob_id: tree.files['transformer/diffusion_pytorch_model.safetensors'].blob_id,
    lfs_sha256: etagOf('transformer/diffusion_pytorch_model.safetensors'),
    lfs_size: contentOf('transformer/diffusion_pytorch_model.safetensors').length,
  });
  t.equal(Object.keys(tree.files).length, tiny.repo.files.length, 'the tree cache lists every file of the commit');
  t.ok(existsSync(join(cacheDir, 'CACHEDIR.TAG')));

  const resolves = hub.requests('hub').filter((r) => r.url.includes('/resolve/'));
  const fetched = new Set(resolves.map((r) => decodeURIComponent(r.url.split(`/resolve/${COMMIT}/`)[1]!)));
  t.same([...fetched].sort(), [...tiny.needed].sort(), 'no skipped file was requested');
  t.equal(resolves[0]!.url, `/acme/tiny-pipe/resolve/${COMMIT}/model_index.json`, 'model_index.json is fetched first');
  const big = contentOf('transformer/diffusion_pytorch_model.safetensors').length;
  const ranges = hub
    .requests('cdn')
    .filter((r) => r.url.includes('transformer%2Fdiffusion_pytorch_model.safetensors'))
    .map((r) => r.range)
    .sort();
  const expected = Array.from({ length: Math.ceil(big / CHUNK) }, (_, i) => `bytes=${i * CHUNK}-${Math.min(big, (i + 1) * CHUNK) - 1}`).sort();
  t.same(ranges, expected, 'the large file came in parallel ranged chunks');
  t.same(
    hub.requests('hub').filter((r) => r.url.startsWith('/api/')).map((r) => r.url.replace(/\?.*/, '')),
    [`/api/models/acme/tiny-pipe/revision/main`, ...Array(TREE_PAGES).fill(`/api/models/acme/tiny-pipe/tree/${COMMIT}`)],
    'one revision lookup, then the paginated tree listing',
  );
  const total = tiny.needed.filter((p) => p !== 'model_index.json').reduce((n, p) => n + contentOf(p).length, 0);
  t.equal(progress.at(-1), total, 'progress ends at the total byte count');
  t.equal(result.downloadedFiles, tiny.needed.length);
});

t.test('a cached model is reused without any request; download re-checks the revision only', async (t) => {
  const cacheDir = freshCache();
  const first = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  hub.log.length = 0;
  const second = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  t.equal(second, first);
  t.equal(hub.log.length, 0, 'no request on a cache hit');
  const again = await downloadModel('acme/tiny-pipe', options(cacheDir));
  t.equal(again.path, first);
  t.equal(again.downloadedFiles, 0);
  t.same(
    hub.log.map((r) => r.url),
    ['/api/models/acme/tiny-pipe/revision/main'],
    'download asks for the current commit; listing and files come from the cache',
  );
});

t.test('revisions: tags and commits resolve to the same snapshot; a missing revision is a clear error', async (t) => {
  const cacheDir = freshCache();
  const byTag = await resolveModelPath('acme/tiny-pipe', options(cacheDir, { revision: 'v1.0' }));
  t.equal(readFileSync(join(repoDir(cacheDir), 'refs', 'v1.0'), 'utf8'), COMMIT);
  hub.log.length = 0;
  t.equal(await resolveModelPath('acme/tiny-pipe', options(cacheDir, { revision: COMMIT })), byTag);
  t.equal(hub.log.length, 0, 'a full commit hash needs no lookup');
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(cacheDir, { revision: 'nope' })), 'revision_not_found', "revision 'nope' not found in acme/tiny-pipe");
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(cacheDir, { revision: '../../etc' })), 'invalid_repo_id', 'invalid revision');
});

t.test('offline mode: cached model used, missing model is a clear error, no request either way', async (t) => {
  const cacheDir = freshCache();
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(cacheDir, { offline: true })), 'offline', 'HF_HUB_OFFLINE', 'node-diffusion download acme/tiny-pipe');
  t.equal(hub.log.length, 0);
  const path = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  hub.log.length = 0;
  process.env.HF_HUB_OFFLINE = '1';
  try {
    t.equal(await resolveModelPath('acme/tiny-pipe', { endpoint: hub.hubUrl, cacheDir }), path, 'HF_HUB_OFFLINE=1 uses the cache');
    t.equal((await downloadModel('acme/tiny-pipe', { endpoint: hub.hubUrl, cacheDir })).path, path, 'download too');
    await rejectsWith(t, resolveModelPath('acme/tiny-pipe-old', { endpoint: hub.hubUrl, cacheDir }), 'offline', 'acme/tiny-pipe-old');
  } finally {
    delete process.env.HF_HUB_OFFLINE;
  }
  t.equal(hub.log.length, 0, 'no request in offline mode');
});

t.test('gated repo: 401 tells the user to set HF_TOKEN; the token is accepted and never sent to the CDN', async (t) => {
  const cacheDir = freshCache();
  await rejectsWith(t, resolveModelPath('acme/gated-pipe', options(cacheDir)), 'unauthorized', 'HF_TOKEN', 'gated', `${hub.hubUrl}/acme/gated-pipe`);
  await rejectsWith(t, resolveModelPath('acme/gated-pipe', options(cacheDir, { token: 'hf_wrong' })), 'unauthorized', 'HTTP 403', 'accepted the model\'s terms');
  hub.log.length = 0;
  process.env.HF_TOKEN = 'hf_secret';
  try {
    const path = await resolveModelPath('acme/gated-pipe', options(cacheDir));
    t.ok(existsSync(join(path, 'transformer', 'diffusion_pytorch_model.safetensors')));
  } finally {
    delete process.env.HF_TOKEN;
  }
  t.ok(hub.requests('hub').every((r) => r.authorization === 'Bearer hf_secret'), 'every hub request is authenticated');
  t.ok(hub.requests('cdn').length > 0);
  t.ok(hub.requests('cdn').every((r) => r.authorization === undefined), 'no token leaves for the CDN origin');

  // The token file in HF_HOME works the same way.
  const home = join(scratch, 'home-with-token');
  mkdirSync(home);
  writeFileSync(join(home, 'token'), 'hf_secret\n');
  process.env.HF_HOME = home;
  try {
    const path = await resolveModelPath('acme/gated-pipe', { endpoint: hub.hubUrl, transfer: TUNING });
    t.equal(path, join(home, 'hub', 'models--acme--gated-pipe', 'snapshots', GATED_COMMIT));
  } finally {
    process.env.HF_HOME = join(scratch, 'default-hf-home');
  }
});

t.test('missing repo (404) and a repo without model_index.json', async (t) => {
  const cacheDir = freshCache();
  await rejectsWith(t, resolveModelPath('acme/missing', options(cacheDir)), 'repo_not_found', 'repository not found: acme/missing', "no local folder 'acme/missing' either");
  await rejectsWith(t, downloadModel('acme/not-a-pipeline', options(cacheDir)), 'not_a_pipeline', 'not a diffusers pipeline repo', 'model_index.json');
  t.equal(hub.requests().filter((r) => r.url.includes('/resolve/')).length, 0, 'nothing was downloaded');
});

t.test('repo ids with path tricks are rejected before any request; local paths and demo ids pass through', async (t) => {
  const cacheDir = freshCache();
  const bad = ['../etc/passwd', 'acme/../x', '/abs/path', 'acme\\tiny', 'acme//tiny', 'acme/', '/acme', 'acme/tiny/extra', '', 'acme/ti ny', 'acme/..', 'acme/tiny\0', 'ac--me/x', 'acme/x.git', '.acme/x', 'acme/-x'];
  for (const id of bad) await rejectsWith(t, resolveModelPath(id, options(cacheDir)), 'invalid_repo_id');
  for (const id of bad) await rejectsWith(t, downloadModel(id, options(cacheDir)), 'invalid_repo_id');
  t.equal(hub.log.length, 0, 'no request for a malformed id');
  t.same(readdirSync(cacheDir), [], 'nothing written');
  const local = join(scratch, 'local-model');
  mkdirSync(local);
  t.equal(await resolveModelPath(local, options(cacheDir)), local);
  t.equal(await resolveModelPath('demo:wan', options(cacheDir)), 'demo:wan');
  t.equal(hub.log.length, 0);
});

t.test('a transfer cut in the middle is resumed with a Range request from the right offset', async (t) => {
  const cacheDir = freshCache();
  const big = 'transformer/diffusion_pytorch_model.safetensors';
  const small = 'text_encoder/model.safetensors';
  hub.misbehave.set(big, { cutAfter: { bytes: 10_000, times: 1, rangeStart: 2 * CHUNK } });
  hub.misbehave.set(small, { cutAfter: { bytes: 20_000, times: 1 } });
  const path = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  const cdn = (p: string) => hub.requests('cdn').filter((r) => r.url.includes(encodeURIComponent(p))).map((r) => r.range);
  t.ok(cdn(big).includes(`bytes=${2 * CHUNK + 10_000}-${3 * CHUNK - 1}`), 'the cut chunk resumed where its data stopped');
  t.same(cdn(small), [undefined, 'bytes=20000-'], 'the cut stream resumed at byte 20000');
  t.equal(sha256(readFileSync(join(path, big))), sha256(contentOf(big)));
  t.equal(sha256(readFileSync(join(path, small))), sha256(contentOf(small)));
});

t.test('an interrupted download leaves a resumable .incomplete file that the next run continues', async (t) => {
  const cacheDir = freshCache();
  const big = 'transformer/diffusion_pytorch_model.safetensors';
  const small = 'text_encoder/model.safetensors';
  const noRetry = { ...TUNING, retry: { maxRetries: 0, baseDelayMs: 1, maxDelayMs: 1 } };
  hub.misbehave.set(small, { cutAfter: { bytes: 12_345, times: 1 } });
  await rejectsWith(
    t,
    resolveModelPath('acme/tiny-pipe', options(cacheDir, { transfer: noRetry })),
    'network',
    `network error for ${hub.hubUrl}/acme/tiny-pipe/resolve/${COMMIT}/text_encoder/model.safetensors`,
    'run again to resume',
  );
  const blobs = join(repoDir(cacheDir), 'blobs');
  const partial = join(blobs, `${etagOf(small)}.incomplete`);
  t.equal(readFileSync(partial).length, 12_345, 'the received bytes are kept');
  t.same(JSON.parse(readFileSync(`${partial}.json`, 'utf8')), { size: contentOf(small).length, ranges: [[0, 12_345]] });
  t.notOk(existsSync(join(repoDir(cacheDir), 'snapshots', COMMIT)), 'no snapshot before every file is verified');

  // Second run: a chunked file is cut too, then everything resumes.
  hub.log.length = 0;
  hub.misbehave.clear();
  const path = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  const smallRequests = hub.requests('cdn').filter((r) => r.url.includes(encodeURIComponent(small)));
  t.same(smallRequests.map((r) => r.range), ['bytes=12345-'], 'resumed from the .incomplete file');
  t.equal(sha256(readFileSync(join(path, small))), sha256(contentOf(small)), 'sha256 of the resumed file is right');
  t.same(readdirSync(blobs).filter((f) => f.includes('incomplete')), [], 'no partial files left');

  // A chunked transfer interrupted between chunks resumes only the missing ranges.
  const cache2 = freshCache();
  hub.misbehave.set(big, { cutAfter: { bytes: 1_000, times: 1, rangeStart: 3 * CHUNK } });
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(cache2, { transfer: { ...noRetry, connections: 1 } })), 'network');
  const state = JSON.parse(readFileSync(join(repoDir(cache2), 'blobs', `${etagOf(big)}.incomplete.json`), 'utf8'));
  t.same(state.ranges, [[0, CHUNK], [CHUNK, 2 * CHUNK], [2 * CHUNK, 3 * CHUNK], [3 * CHUNK, 3 * CHUNK + 1_000]]);
  hub.log.length = 0;
  hub.misbehave.clear();
  const path2 = await resolveModelPath('acme/tiny-pipe', options(cache2));
  const size = contentOf(big).length;
  t.same(
    hub.requests('cdn').filter((r) => r.url.includes(encodeURIComponent(big))).map((r) => r.range).sort(),
    [`bytes=${3 * CHUNK + 1_000}-${4 * CHUNK - 1}`, `bytes=${4 * CHUNK}-${size - 1}`].sort(),
    'only the missing ranges are requested',
  );
  t.equal(sha256(readFileSync(join(path2, big))), sha256(contentOf(big)));
});

t.test('a server that ignores Range gets one stream instead of chunks', async (t) => {
  const cacheDir = freshCache();
  const big = 'transformer/diffusion_pytorch_model.safetensors';
  hub.misbehave.set(big, { ignoreRange: true });
  const path = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  const requests = hub.requests('cdn').filter((r) => r.url.includes(encodeURIComponent(big)));
  t.equal(requests.length, 1, 'the probe answer (200, whole file) was used as the download');
  t.same(readFileSync(join(path, big)), contentOf(big));
});

t.test('a corrupted file is rejected and nothing is linked into the snapshot', async (t) => {
  const cacheDir = freshCache();
  const vae = 'vae/diffusion_pytorch_model.safetensors';
  hub.misbehave.set(vae, { corrupt: true });
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(cacheDir)), 'integrity', vae, 'sha256', etagOf(vae));
  const root = repoDir(cacheDir);
  t.notOk(existsSync(join(root, 'blobs', etagOf(vae))), 'no blob for the corrupted file');
  t.same(readdirSync(join(root, 'blobs')).filter((f) => f.startsWith(etagOf(vae))), [], 'its partial download was deleted');
  t.same(readdirSync(join(root, 'snapshots')), [], 'snapshots/ is empty');
  t.notOk(existsSync(join(root, 'refs', 'main')), 'refs/main is not written');
  hub.misbehave.clear();
  hub.log.length = 0;
  const path = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  t.same(readFileSync(join(path, vae)), contentOf(vae), 'a later run fetches the good bytes');
  t.same(
    hub.requests('hub').filter((r) => r.url.includes('/resolve/')).map((r) => r.url.split(`${COMMIT}/`)[1]),
    [vae],
    'files verified by the failed run are not fetched again',
  );
  // A regular (non-LFS) file is checked against its git blob id.
  hub.misbehave.set('tokenizer/tokenizer.json', { corrupt: true });
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(freshCache())), 'integrity', 'tokenizer/tokenizer.json', 'git blob sha1');
});

t.test('transient hub errors are retried a bounded number of times', async (t) => {
  const cacheDir = freshCache();
  hub.failApi = { match: '/revision/', status: 503, times: 2 };
  await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  t.equal(hub.requests('hub').filter((r) => r.url.includes('/revision/')).length, 3, 'two 503s, then success');
  hub.log.length = 0;
  hub.failApi = { match: '/revision/', status: 503, times: 100 };
  await rejectsWith(t, downloadModel('acme/tiny-pipe', options(cacheDir)), 'http', 'HTTP 503');
  t.equal(hub.requests('hub').length, 1 + TUNING.retry.maxRetries, 'gave up after the retries');
});

t.test('a download link refused by the CDN (expired signature) is fetched again through the hub', async (t) => {
  const cacheDir = freshCache();
  const vae = 'vae/diffusion_pytorch_model.safetensors';
  hub.misbehave.set(vae, { fail: { status: 403, times: 1 } });
  const path = await resolveModelPath('acme/tiny-pipe', options(cacheDir));
  t.same(readFileSync(join(path, vae)), contentOf(vae));
  t.equal(hub.requests('hub').filter((r) => r.url.endsWith(`/${vae}`)).length, 2, 'resolved twice');
  hub.misbehave.set(vae, { fail: { status: 403, times: 100 } });
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe', options(freshCache())), 'http', 'HTTP 403 from', 'where the hub redirected');
});

t.test('network errors name the URL', async (t) => {
  const cacheDir = freshCache();
  const dead = 'http://127.0.0.1:9'; // discard port: nothing listens
  await rejectsWith(
    t,
    resolveModelPath('acme/tiny-pipe', { endpoint: dead, cacheDir, transfer: { retry: { maxRetries: 1, baseDelayMs: 1, maxDelayMs: 1 } } }),
    'network',
    `network error for ${dead}/api/models/acme/tiny-pipe/revision/main`,
  );
});

t.test('not enough disk space is reported before downloading', async (t) => {
  const cacheDir = freshCache();
  await rejectsWith(t, resolveModelPath('acme/huge', options(cacheDir)), 'disk', 'not enough disk space');
  t.same(
    hub.requests('hub').filter((r) => r.url.includes('/resolve/')).map((r) => r.url.split('/').at(-1)),
    ['model_index.json'],
    'only model_index.json was fetched',
  );
});

t.test('HF_ENDPOINT and HF_HOME are honoured', async (t) => {
  const home = join(scratch, 'env-home');
  process.env.HF_ENDPOINT = `${hub.hubUrl}/`;
  process.env.HF_HOME = home;
  try {
    const path = await resolveModelPath('acme/tiny-pipe', { transfer: TUNING });
    t.equal(path, join(home, 'hub', 'models--acme--tiny-pipe', 'snapshots', COMMIT));
    t.ok(hub.requests('hub').length > 0, 'requests went to HF_ENDPOINT');
    process.env.HF_HUB_CACHE = join(scratch, 'env-hub-cache');
    const other = await resolveModelPath('acme/tiny-pipe', { transfer: TUNING });
    t.equal(other, join(scratch, 'env-hub-cache', 'models--acme--tiny-pipe', 'snapshots', COMMIT), 'HF_HUB_CACHE wins over HF_HOME');
  } finally {
    delete process.env.HF_ENDPOINT;
    delete process.env.HF_HUB_CACHE;
    process.env.HF_HOME = join(scratch, 'default-hf-home');
  }
});

t.test('a snapshot written by Python huggingface_hub is reused without requests', async (t) => {
  // The layout of huggingface_hub < 1.x (no trees/ listing): blobs, relative symlinks, refs/main.
  const cacheDir = freshCache();
  const root = repoDir(cacheDir, 'acme/tiny-pipe-old');
  const snap = join(root, 'snapshots', COMMIT_V0);
  mkdirSync(join(root, 'blobs'), { recursive: true });
  mkdirSync(join(root, 'refs'), { recursive: true });
  writeFileSync(join(root, 'refs', 'main'), COMMIT_V0);
  for (const path of old.needed) {
    const f = old.repo.files.find((x) => x.path === path)!;
    const etag = f.lfs ? sha256(f.content) : gitBlobId(f.content);
    writeFileSync(join(root, 'blobs', etag), f.content);
    const link = join(snap, path);
    mkdirSync(join(link, '..'), { recursive: true });
    symlinkSync(`${'../'.repeat(path.split('/').length + 1)}blobs/${etag}`, link);
  }
  t.equal(await resolveModelPath('acme/tiny-pipe-old', options(cacheDir)), snap);
  t.equal(await resolveModelPath('acme/tiny-pipe-old', options(cacheDir, { offline: true })), snap);
  t.equal(hub.log.length, 0, 'no request');

  // A snapshot missing a component folder is completed: the blobs are still there, so only links are made.
  rmSync(join(snap, 'vae'), { recursive: true });
  await rejectsWith(t, resolveModelPath('acme/tiny-pipe-old', options(cacheDir, { offline: true })), 'offline', 'incomplete', 'vae');
  t.equal(await resolveModelPath('acme/tiny-pipe-old', options(cacheDir)), snap);
  t.same(hub.requests('hub').filter((r) => r.url.includes('/resolve/')), [], 'no file was downloaded');
  t.same(readFileSync(join(snap, 'vae', 'config.json')), old.repo.files.find((f) => f.path === 'vae/config.json')!.content);
});

t.test('concurrent calls for one model share a single download', async (t) => {
  const cacheDir = freshCache();
  const [a, b] = await Promise.all([resolveModelPath('acme/tiny-pipe', options(cacheDir)), resolveModelPath('acme/tiny-pipe', options(cacheDir))]);
  t.equal(a, b);
  t.equal(hub.requests('hub').filter((r) => r.url.includes('/revision/')).length, 1);
  t.equal(hub.requests('hub').filter((r) => r.url.endsWith('/model_index.json')).length, 1);
});

t.test('file selection', async (t) => {
  const file = (path: string) => ({ path, size: 1, blobId: '0'.repeat(40) });
  const index = { _class_name: 'P', transformer: ['diffusers', 'T'], text_encoder: ['transformers', 'E'], tokenizer: ['transformers', 'T5TokenizerFast'], unused: [null, null] };
  const listing = [
    'model_index.json', 'README.md', 'flux.safetensors', 'scheduler_config.json',
    'transformer/config.json', 'transformer/diffusion_pytorch_model.safetensors.index.json',
    'transformer/diffusion_pytorch_model-00001-of-00002.safetensors', 'transformer/diffusion_pytorch_model-00002-of-00002.safetensors',
    'transformer/diffusion_pytorch_model.fp16-00001-of-00001.safetensors', 'transformer/diffusion_pytorch_model.safetensors.index.fp16.json',
    'transformer/diffusion_pytorch_model.bin.index.json', 'transformer/diffusion_pytorch_model-00001-of-00002.bin', 'transformer/model.ckpt',
    'text_encoder/config.json', 'text_encoder/pytorch_model.bin', 'text_encoder/flax_model.msgpack', 'text_encoder/model.onnx', 'text_encoder/rust_model.ot',
    'text_encoder/generation_config.json', 'transformer/README.md',
    'tokenizer/tokenizer.json', 'tokenizer/special_tokens_map.json', 'tokenizer/spiece.model',
    'unused/config.json', 'vae/config.json',
  ].map(file);
  t.same(selectPipelineFiles(listing, index).map((f) => f.path), [
    'model_index.json', 'scheduler_config.json',
    'transformer/config.json', 'transformer/diffusion_pytorch_model.safetensors.index.json',
    'transformer/diffusion_pytorch_model-00001-of-00002.safetensors', 'transformer/diffusion_pytorch_model-00002-of-00002.safetensors',
    'text_encoder/config.json', 'text_encoder/pytorch_model.bin',
    'tokenizer/tokenizer.json', 'tokenizer/special_tokens_map.json', 'tokenizer/spiece.model',
  ], 'pickle weights only where no safetensors exist; weight folders give weights and config.json; other folders everything');
  t.throws(() => selectPipelineFiles(listing, { _class_name: 'P' }), /names no components/);
});

t.test('node-diffusion download', async (t) => {
  const cacheDir = freshCache();
  process.env.HF_ENDPOINT = hub.hubUrl;
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  const write = process.stderr.write;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  process.stderr.write = ((chunk: string) => err.push(String(chunk)) > 0) as typeof process.stderr.write;
  let code: number;
  let bad: number;
  let missing: number;
  try {
    code = await main(['download', 'acme/tiny-pipe', '--cache-dir', cacheDir]);
    bad = await main(['download', 'acme/../x', '--cache-dir', cacheDir]);
    missing = await main(['download', 'acme/missing', '--cache-dir', cacheDir]);
  } finally {
    console.log = log;
    console.error = error;
    process.stderr.write = write;
    delete process.env.HF_ENDPOINT;
  }
  t.equal(code, 0);
  t.same(out, [join(repoDir(cacheDir), 'snapshots', COMMIT)], 'prints the snapshot folder');
  t.ok(err.some((l) => l.includes('files') && l.includes('to download')), 'announces the download');
  t.ok(err.some((l) => l.includes('"msg":"downloading acme/tiny-pipe"')), 'progress as JSON lines off a TTY');
  t.equal(bad, 2);
  t.ok(err.some((l) => l.includes("invalid Hugging Face repo id 'acme/../x'")));
  t.equal(missing, 1);
  t.ok(err.some((l) => l.includes('repository not found: acme/missing')));
});
