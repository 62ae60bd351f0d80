import { start } from './index.js';

// `chipmunk <command>`: start (default) runs the server; later commands add operator tools.
export async function main(argv: string[]): Promise<void> {
  const [command = 'start'] = argv;
  switch (command) {
    case 'start':
      await start();
      return;
    default:
      process.stderr.write(`chipmunk: unknown command "${command}". Commands: start\n`);
      process.exit(2);
  }
}
