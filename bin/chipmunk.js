#!/usr/bin/env node
// The package's command: `chipmunk [start|nginx-config|fsck]`. The TypeScript is compiled by `npm install` (prepare).
import('../dist/src/cli.js').then((cli) => cli.main(process.argv.slice(2)));
