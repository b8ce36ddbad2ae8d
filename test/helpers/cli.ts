// Running the CLI in-process with what it prints captured (and kept off the test output).
import { main } from '../../lib/cli/main.js';

export interface CliRun {
  /** main()'s exit code */
  code: number;
  /** the console.log lines */
  out: string;
  /** the console.error lines and everything written to process.stderr (progress bars) */
  err: string;
}

/** `node-diffusion <args>` in this process. */
export async function runCli(args: string[]): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  const write = process.stderr.write.bind(process.stderr);
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  process.stderr.write = ((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
    process.stderr.write = write;
  }
}
