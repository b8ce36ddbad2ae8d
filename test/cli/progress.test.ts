// The progress reporter: JSON log lines off a TTY, a redrawn bar on a TTY, rates and ETAs from the clock.
import { Writable } from 'node:stream';
import t from 'tap';
import { createProgress, formatAmount, formatDuration } from '../../lib/cli/progress.js';

function sink(isTTY: boolean) {
  const chunks: string[] = [];
  const stream = Object.assign(
    new Writable({
      write(chunk, _enc, cb) {
        chunks.push(String(chunk));
        cb();
      },
    }),
    { isTTY, columns: 100 },
  );
  return { stream, chunks };
}

t.test('off a TTY: one JSON line at the start, then one per interval, and a final one', async (t) => {
  const { stream, chunks } = sink(false);
  let now = 1_000_000;
  const p = createProgress({ total: 1000, label: 'downloading x', unit: 'bytes', stream, logIntervalMs: 5000, now: () => now });
  p.update(100); // first update logs
  now += 1000;
  p.update(300); // within the interval: silent
  now += 4000;
  p.update(600); // 5 s after the first line
  now += 1000;
  p.done();
  const lines = chunks.join('').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.length, 3);
  t.match(lines[0], { msg: 'downloading x', done: 100, total: 1000, unit: 'bytes', percent: 10 });
  t.match(lines[1], { done: 600, percent: 60, rate: 120, elapsed_s: 5, eta_s: 3 }, '600 B in 5 s: 120 B/s, 400 B left: ~3 s');
  t.match(lines[2], { done: 600, finished: true, elapsed_s: 6 });
});

t.test('the rate ignores work done before the start (resumed downloads)', async (t) => {
  const { stream, chunks } = sink(false);
  let now = 0;
  const p = createProgress({ total: 1000, initial: 500, label: 'l', unit: 'bytes', stream, logIntervalMs: 1, now: () => now });
  now = 2000;
  p.update(700);
  t.match(JSON.parse(chunks[0]!), { done: 700, rate: 100, eta_s: 3 });
});

t.test('on a TTY: a bar redrawn in place, throttled, ending with a newline', async (t) => {
  const { stream, chunks } = sink(true);
  let now = 0;
  const p = createProgress({ total: 30, label: 'denoising', unit: 'steps', stream, now: () => now });
  for (let i = 0; i < 30; i++) {
    now += 50; // 20 steps/s, redraws at most every 100 ms
    p.tick();
  }
  p.done();
  t.ok(chunks.length <= 17, `throttled (${chunks.length} draws for 30 ticks)`);
  t.ok(chunks.every((c) => c.startsWith('\r')), 'redraws in place');
  const last = chunks.at(-1)!;
  t.match(last, /^\rdenoising █+ 100% 30\/30 steps 20\.00 steps\/s 2s\x1b\[K\n$/);
  t.match(chunks[0]!, /ETA/);
  p.tick();
  t.equal(chunks.at(-1), last, 'nothing is drawn after done()');
});

t.test('formatting', async (t) => {
  t.equal(formatAmount(999, 'bytes'), '999 B');
  t.equal(formatAmount(1_500_000, 'bytes'), '1.50 MB');
  t.equal(formatAmount(23_400_000_000, 'bytes'), '23.4 GB');
  t.equal(formatAmount(7, 'steps'), '7');
  t.equal(formatDuration(5), '5s');
  t.equal(formatDuration(125), '2m05s');
  t.equal(formatDuration(7300), '2h01m');
  t.equal(formatDuration(NaN), '?');
});
