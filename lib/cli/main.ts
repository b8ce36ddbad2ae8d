// node-diffusion <command>: each subcommand lives in its own module under lib/cli/.
export interface Command {
  summary: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, () => Promise<Command>> = {
  check: async () => (await import('./check.js')).command,
  generate: async () => (await import('./generate.js')).command,
  serve: async () => (await import('./serve.js')).command,
  bench: async () => (await import('./bench.js')).command,
  download: async () => (await import('./download.js')).command,
};

function usage(): string {
  const lines = ['Usage: node-diffusion <command> [options]', '', 'Commands:'];
  for (const name of Object.keys(COMMANDS)) lines.push(`  ${name}`);
  lines.push('', 'Run `node-diffusion <command> --help` for the options of a command.');
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  if (name === '--version' || name === '-v') {
    const { createRequire } = await import('node:module');
    const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
    console.log(pkg.version);
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    console.error(`unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  const cmd = await load();
  return cmd.run(rest);
}
