// Plain JavaScript so it runs without a TypeScript loader: the raw pipe-to-disk baseline.
import { createWriteStream, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';

const dir = process.argv[2];
mkdirSync(dir, { recursive: true });
let n = 0;
const server = http.createServer(async (req, res) => {
  const file = path.join(dir, `upload-${n++}`);
  try {
    await pipeline(req, createWriteStream(file));
    res.writeHead(204).end();
  } catch {
    res.writeHead(500).end();
  } finally {
    rmSync(file, { force: true });
  }
});
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
