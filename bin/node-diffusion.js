#!/usr/bin/env node
// Command-line entry; the implementation lives in lib/cli (compiled to dist/cli).
import('../dist/cli/main.js')
  .then((m) => m.main(process.argv.slice(2)))
  .then((code) => {
    if (typeof code === 'number') process.exitCode = code;
  })
  .catch((err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
