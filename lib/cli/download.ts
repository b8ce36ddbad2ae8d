// node-diffusion download <org/name>: fetch a diffusers pipeline from the Hugging Face hub into the cache.
import { parseArgs } from 'node:util';
import { downloadModel, HubError, type DownloadProgress } from '../io/hub/index.js';
import type { Command } from './main.js';
import { createProgress, formatAmount, type Progress } from './progress.js';

const HELP = `Usage: node-diffusion download <org/name> [options]

Download the files a diffusers pipeline needs from the Hugging Face hub into the Hugging Face cache
(shared with Python tools) and print the snapshot folder.

Options:
  --revision <rev>    branch, tag or commit (default: main)
  --cache-dir <dir>   cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)
  --token <token>     access token for gated or private models (default: $HF_TOKEN, else $HF_HOME/token)
  -h, --help          show this help

Environment: HF_ENDPOINT (hub URL), HF_HUB_OFFLINE=1 (no network: only check the cache),
HF_HUB_DOWNLOAD_TIMEOUT (seconds without data before a transfer is retried).`;

export const command: Command = {
  summary: 'download a model from the Hugging Face hub into the local cache',
  async run(argv: string[]): Promise<number> {
    let parsed;
    try {
      parsed = parseArgs({
        args: argv,
        allowPositionals: true,
        options: {
          revision: { type: 'string' },
          'cache-dir': { type: 'string' },
          token: { type: 'string' },
          help: { type: 'boolean', short: 'h' },
        },
      });
    } catch (err) {
      console.error(`${(err as Error).message}\n\n${HELP}`);
      return 2;
    }
    const { values, positionals } = parsed;
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (positionals.length !== 1) {
      console.error(`expected exactly one repo id, got ${positionals.length}\n\n${HELP}`);
      return 2;
    }
    const repoId = positionals[0]!;
    let bar: Progress | undefined;
    const onProgress = (p: DownloadProgress) => {
      if (!bar) {
        if (p.filesTotal === 0) return;
        console.error(`${repoId}@${p.commit.slice(0, 10)}: ${p.filesTotal} files, ${formatAmount(p.bytesTotal - p.bytesDone, 'bytes')} to download`);
        bar = createProgress({ total: p.bytesTotal, initial: p.bytesDone, label: `downloading ${repoId}`, unit: 'bytes' });
      }
      bar.update(p.bytesDone);
    };
    try {
      const result = await downloadModel(repoId, {
        revision: values.revision,
        cacheDir: values['cache-dir'],
        token: values.token,
        onProgress,
      });
      bar?.done();
      if (result.downloadedFiles === 0) console.error(`${repoId}: up to date in the cache`);
      console.log(result.path);
      return 0;
    } catch (err) {
      bar?.done();
      if (err instanceof HubError) {
        console.error(`error: ${err.message}`);
        return err.code === 'invalid_repo_id' ? 2 : 1;
      }
      throw err;
    }
  },
};
