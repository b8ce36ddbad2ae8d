// Progress of long work (downloads, denoising steps, encoding): a redrawn bar on a TTY, periodic
// structured (JSON) log lines otherwise.
export interface ProgressOptions {
  /** Amount of work; 0 or less when unknown. */
  total: number;
  label: string;
  /** 'bytes' formats sizes and rates in B/KB/MB/GB; anything else is a unit name ('steps', 'frames'). */
  unit?: string;
  /** Work already done when the progress starts (resumed downloads); not counted in the rate. */
  initial?: number;
  /** Where to write; default process.stderr. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Milliseconds between log lines when the stream is not a TTY; default 5000. */
  logIntervalMs?: number;
  /** Clock, for tests. */
  now?: () => number;
}

export interface Progress {
  /** Add n units of finished work. */
  tick(n?: number): void;
  /** Set the finished amount. */
  update(done: number): void;
  /** Finish: draws the final state once (with a newline on a TTY). */
  done(): void;
}

const REDRAW_MS = 100;

export function formatAmount(n: number, unit: string): string {
  if (unit !== 'bytes') return `${Math.round(n * 100) / 100}`;
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(ss).padStart(2, '0')}s` : `${ss}s`;
}

export function createProgress(opts: ProgressOptions): Progress {
  const stream = opts.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY);
  const unit = opts.unit ?? 'steps';
  const now = opts.now ?? Date.now;
  const logEvery = opts.logIntervalMs ?? 5000;
  const start = now();
  const initial = opts.initial ?? 0;
  let current = initial;
  let lastDraw = -Infinity;
  let finished = false;

  const stats = () => {
    const elapsed = (now() - start) / 1000;
    const rate = elapsed > 0 ? (current - initial) / elapsed : 0;
    const remaining = opts.total > 0 ? Math.max(0, opts.total - current) : NaN;
    return { elapsed, rate, eta: rate > 0 ? remaining / rate : NaN };
  };

  const rateText = (rate: number) => (unit === 'bytes' ? `${formatAmount(rate, unit)}/s` : `${rate.toFixed(2)} ${unit}/s`);

  const drawTty = (final: boolean) => {
    const { elapsed, rate, eta } = stats();
    const frac = opts.total > 0 ? Math.min(1, current / opts.total) : 0;
    const amounts =
      opts.total > 0
        ? `${formatAmount(current, unit)}/${formatAmount(opts.total, unit)}${unit === 'bytes' ? '' : ` ${unit}`}`
        : `${formatAmount(current, unit)}${unit === 'bytes' ? '' : ` ${unit}`}`;
    const timing = final ? formatDuration(elapsed) : `ETA ${formatDuration(eta)}`;
    const tail = ` ${(frac * 100).toFixed(0).padStart(3)}% ${amounts} ${rateText(rate)} ${timing}`;
    const width = Math.max(10, Math.min(40, (stream.columns ?? 80) - opts.label.length - tail.length - 4));
    const filled = Math.round(frac * width);
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    stream.write(`\r${opts.label} ${bar}${tail}\x1b[K${final ? '\n' : ''}`);
  };

  const logLine = (final: boolean) => {
    const { elapsed, rate, eta } = stats();
    const line: Record<string, unknown> = {
      time: new Date(now()).toISOString(),
      msg: opts.label,
      done: current,
      total: opts.total > 0 ? opts.total : null,
      unit,
      percent: opts.total > 0 ? Math.round((1000 * current) / opts.total) / 10 : null,
      rate: Math.round(rate * 100) / 100,
      elapsed_s: Math.round(elapsed * 10) / 10,
    };
    if (!final) line.eta_s = Number.isFinite(eta) ? Math.round(eta) : null;
    else line.finished = true;
    stream.write(`${JSON.stringify(line)}\n`);
  };

  const maybeDraw = () => {
    const t = now();
    if (tty ? t - lastDraw >= REDRAW_MS : t - lastDraw >= logEvery) {
      lastDraw = t;
      if (tty) drawTty(false);
      else logLine(false);
    }
  };

  return {
    tick(n = 1) {
      if (finished) return;
      current += n;
      maybeDraw();
    },
    update(done: number) {
      if (finished) return;
      current = done;
      maybeDraw();
    },
    done() {
      if (finished) return;
      finished = true;
      if (tty) drawTty(true);
      else logLine(true);
    },
  };
}
