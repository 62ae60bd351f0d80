import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

// The demo page's files: its own (src/demo/public) and two browser builds taken straight from
// installed npm packages, so nothing is fetched from a CDN and the page works offline.

export type DemoAsset = { body: Uint8Array; contentType: string };

const require = createRequire(import.meta.url);

/** Served at /demo/assets/<name>; read once, when the app is built with the demo on. */
const vendor: Record<string, { module: string; contentType: string }> = {
  'tus.min.js': { module: 'tus-js-client/dist/tus.min.js', contentType: 'text/javascript; charset=utf-8' },
  'thumbhash.js': { module: 'thumbhash/thumbhash.js', contentType: 'text/javascript; charset=utf-8' },
};

const own: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'demo.css': 'text/css; charset=utf-8',
  'demo.js': 'text/javascript; charset=utf-8',
};

export function loadDemoAssets(): Map<string, DemoAsset> {
  const publicDir = path.join(packageRoot(import.meta.dirname), 'src', 'demo', 'public');
  const assets = new Map<string, DemoAsset>();
  for (const [name, contentType] of Object.entries(own)) {
    assets.set(name, { body: readFileSync(path.join(publicDir, name)), contentType });
  }
  for (const [name, { module, contentType }] of Object.entries(vendor)) {
    let file: string;
    try {
      file = require.resolve(module);
    } catch (err) {
      throw new Error(`The demo page needs the npm package file ${module}; run npm install (or set CHIPMUNK_DEMO=off).`, { cause: err });
    }
    assets.set(name, { body: readFileSync(file), contentType });
  }
  return assets;
}

// Runs from src/ under tsx/vitest and from dist/src/ when built: walk up to package.json.
function packageRoot(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    try {
      readFileSync(path.join(dir, 'package.json'));
      return dir;
    } catch {
      if (path.dirname(dir) === dir) throw new Error(`No package.json above ${from}`);
    }
  }
}
