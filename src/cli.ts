import { ConfigError } from './config.js';
import { start } from './index.js';
import { fsckCommand } from './ops/fsck-command.js';

// `chipmunk <command>`: start (default) runs the server; fsck checks the data directory.
export async function main(argv: string[]): Promise<void> {
  const [command = 'start', ...args] = argv;
  switch (command) {
    case 'start':
      await start();
      return;
    case 'fsck':
      try {
        process.exitCode = await fsckCommand(args);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        process.stderr.write(`chipmunk: ${err.message}\n`);
        process.exitCode = 2;
      }
      return;
    default:
      process.stderr.write(`chipmunk: unknown command "${command}". Commands: start, fsck [--repair]\n`);
      process.exit(2);
  }
}
