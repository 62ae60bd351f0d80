import { randomBytes } from 'node:crypto';
import { readFile, rm, stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, createServer, type Server } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { nginxConfigCommand } from '../src/cli.js';
import { ERROR_STATUS, type ErrorCode } from '../src/errors.js';
import { corpus } from './helpers/chipmunk.js';
import { startNginxOver, type TestNginx } from './helpers/nginx.js';
import { freePort, serverEnvironment, spawnServer, type ServerProcess } from './helpers/server-process.js';
import { tusUpload } from './helpers/tus.js';

// Several identical nodes behind the rendered nginx: two real Chipmunk processes, each with its own
// data directory (embedded mode shares no metadata, so only what the nginx config decides is tested
// here: balancing, failover, never replaying what may have had effects, nginx's own JSON errors).
// Which node handled a request is read from the nodes' own request logs, by the x-request-id sent.

type Node = { name: string; env: Record<string, string>; dataDir: string; url: string; internalUrl: string; server: ServerProcess };
type ErrorJson = { error: { code: ErrorCode; message: string } };

const asRoot = process.getuid?.() === 0;
let requestCounter = 0;
const newRequestId = (what: string) => `${what}-${process.pid}-${++requestCounter}`;

async function startNode(name: string, shared: Record<string, string>): Promise<Node> {
  const internalPort = await freePort();
  const { dataDir, env } = await serverEnvironment(name, {
    CHIPMUNK_LOG_LEVEL: 'info',
    CHIPMUNK_INTERNAL_PORT: String(internalPort),
    // As root, nginx's workers run as nobody:nogroup: the media are shared with that group.
    ...(asRoot ? { CHIPMUNK_MEDIA_GROUP: 'nogroup' } : {}),
    ...shared,
  });
  const server = await spawnServer(env);
  return { name, env, dataDir, url: server.url, internalUrl: `http://127.0.0.1:${internalPort}`, server };
}

/** The request ids a node has logged so far, once a marker sent last has reached its log (the pipe is in order). */
async function loggedIds(node: Node): Promise<Set<string>> {
  const marker = newRequestId('marker');
  await fetch(`${node.url}/v1/users/marker`, { headers: { 'x-request-id': marker, authorization: `Bearer ${node.env.CHIPMUNK_API_KEY}` } });
  for (let i = 0; !node.server.output().includes(`"${marker}"`); i++) {
    if (i > 400) throw new Error(`${node.name} never logged ${marker}:\n${node.server.output().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return new Set([...node.server.output().matchAll(/"requestId":"([^"]+)"/g)].map((m) => m[1]!));
}

async function stopNode(node: Node, signal: NodeJS.Signals): Promise<void> {
  if (node.server.proc.exitCode !== null || node.server.proc.signalCode !== null) return;
  node.server.proc.kill(signal);
  await node.server.exited;
}

const expectJsonError = async (res: Response, status: number, code: ErrorCode) => {
  expect(res.status).toBe(status);
  expect(res.headers.get('content-type')).toBe('application/json');
  const body = (await res.json()) as ErrorJson;
  expect(body.error.code).toBe(code);
  expect(ERROR_STATUS[body.error.code]).toBe(status);
  expect(body.error.message.length).toBeGreaterThan(10);
  return body;
};

describe('nginx in front of two Chipmunk nodes', () => {
  let a: Node;
  let b: Node;
  let nginx: TestNginx;
  let fileUrl: string;
  const nodes = () => [a, b];
  const apiKey = `ck_${randomBytes(18).toString('base64url')}`;
  const secret = randomBytes(32).toString('base64url');
  const api = (pathname: string, init: RequestInit & { id: string }) =>
    fetch(`${nginx.url}${pathname}`, { ...init, headers: { ...(init.headers as object), authorization: `Bearer ${apiKey}`, 'x-request-id': init.id } });

  beforeAll(async () => {
    // The same API key and secret on both nodes (as a cluster has): either accepts the other's tokens.
    const shared = { CHIPMUNK_API_KEY: apiKey, CHIPMUNK_SECRET: secret };
    [a, b] = await Promise.all([startNode('node-a', shared), startNode('node-b', shared)]);
    // nginx serves /f/ bytes from node a's media folder (one shared store in a real cluster).
    nginx = await startNginxOver(nodes(), { CHIPMUNK_DATA_DIR: a.dataDir, CHIPMUNK_AUTH_CACHE: '0' });
    const token = await mintUploadToken(a.url, apiKey, 'alice');
    const uploaded = await tusUpload(`${a.url}/uploads`, await readFile(corpus('images/photos/portrait-canal.jpg')), {
      token,
      metadata: { filename: 'canal.jpg' },
    });
    if (!uploaded.ok) throw uploaded.error;
    const original = (uploaded.body as { variants: Array<{ n: number; url: string }> }).variants.find((v) => v.n === 0)!;
    fileUrl = `${nginx.url}${new URL(original.url).pathname}${new URL(original.url).search}`;
  }, 60_000);

  afterAll(async () => {
    await nginx?.close();
    for (const node of [a, b].filter(Boolean)) {
      await stopNode(node, 'SIGKILL');
      await rm(node.dataDir, { recursive: true, force: true });
    }
  });

  it('spreads requests over both nodes, each request to exactly one', async () => {
    const ids = Array.from({ length: 20 }, () => newRequestId('spread'));
    for (const id of ids) expect((await api('/v1/users/alice', { id })).status).toBe(200);
    const [seenA, seenB] = await Promise.all(nodes().map(loggedIds));
    const onA = ids.filter((id) => seenA!.has(id));
    const onB = ids.filter((id) => seenB!.has(id));
    expect(onA.length).toBeGreaterThan(0);
    expect(onB.length).toBeGreaterThan(0);
    expect(onA.length + onB.length).toBe(ids.length);
    expect(onA.filter((id) => seenB!.has(id))).toEqual([]);
  });

  it("answers nginx's own refusals in Chipmunk's JSON, from the one error table", async () => {
    // 412: nginx itself evaluates If-Match and If-Unmodified-Since on the file it serves. Only node a
    // knows the file (embedded mode), so this nginx asks a alone.
    const single = await startNginxOver([a], { CHIPMUNK_DATA_DIR: a.dataDir, CHIPMUNK_AUTH_CACHE: '0' });
    onTestFinished(() => single.close());
    const direct = await fetch(fileUrl.replace(nginx.url, a.url), { headers: { 'If-Match': '"other"' } });
    const alone = await expectJsonError(direct, 412, 'PRECONDITION_FAILED');
    const failing: Array<Record<string, string>> = [{ 'If-Match': '"other"' }, { 'If-Unmodified-Since': 'Thu, 01 Jan 1970 00:00:00 GMT' }];
    for (const headers of failing) {
      const res = await fetch(fileUrl.replace(nginx.url, single.url), { headers });
      expect(await expectJsonError(res, 412, 'PRECONDITION_FAILED')).toEqual(alone);
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    }
    // 413: a body over the limit of its address, refused before any node sees it.
    const id = newRequestId('large');
    const large = await api('/v1/users/alice', { id, method: 'PUT', body: Buffer.alloc(1_200_000), headers: { 'content-type': 'application/json' } });
    expect((await expectJsonError(large, 413, 'FILE_TOO_LARGE')).error.message).toMatch(/at most 1 MB/);
    const [seenA, seenB] = await Promise.all(nodes().map(loggedIds));
    expect(seenA!.has(id) || seenB!.has(id)).toBe(false);
    // nginx's internal locations, asked for by a client.
    for (const pathname of ['/_chipmunk/auth', '/_chipmunk/414']) await expectJsonError(await fetch(`${nginx.url}${pathname}`), 404, 'NOT_FOUND');
    // What nginx refuses while reading a request: a URI or headers over its buffers, an unknown
    // Transfer-Encoding, TRACE.
    await expectJsonError(await fetch(`${nginx.url}/v1/${'a'.repeat(20_000)}`), 414, 'URI_TOO_LONG');
    await expectJsonError(await fetch(`${nginx.url}/v1/users/alice`, { headers: { cookie: 'a'.repeat(20_000) } }), 431, 'HEADERS_TOO_LARGE');
    const raw = async (head: string) => {
      const text = await rawRequest(nginx.url, head);
      const [status, body] = [Number(text.split(' ')[1]), text.slice(text.indexOf('\r\n\r\n') + 4)];
      expect(text).toMatch(/\r\nContent-Type: application\/json\r\n/);
      return { status, code: (JSON.parse(body) as ErrorJson).error.code };
    };
    expect(await raw('POST /v1/upload-tokens HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n')).toEqual({
      status: 501,
      code: 'NOT_IMPLEMENTED',
    });
    expect(await raw('TRACE /v1/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toEqual({ status: 405, code: 'METHOD_NOT_ALLOWED' });
  });

  it('sends DELETE and PUT to one node and passes their answers through', async () => {
    const put = await api('/v1/users/carol', {
      id: newRequestId('put'),
      method: 'PUT',
      body: JSON.stringify({ quotaBytes: 5_000_000 }),
      headers: { 'content-type': 'application/json' },
    });
    expect(put.status).toBe(200);
    const direct = await fetch(`${a.url}/v1/files/nothere`, { method: 'DELETE', headers: { authorization: `Bearer ${apiKey}` } });
    const deleted = await api('/v1/files/nothere', { id: newRequestId('delete'), method: 'DELETE' });
    expect(direct.status).toBeGreaterThanOrEqual(400);
    expect([deleted.status, await deleted.json()]).toEqual([direct.status, await direct.json()]);
  });

  it('a PATCH whose node dies mid-body is answered with an error, and the other node never receives it', async () => {
    const token = await mintUploadToken(a.url, apiKey, 'erin');
    const total = 8_000_000;
    // The upload exists on one node only (embedded mode): find which, by the creation's request id.
    const createId = newRequestId('create');
    const created = await fetch(`${nginx.url}/uploads`, {
      method: 'POST',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Length': String(total),
        'Upload-Metadata': `filename ${Buffer.from('big.bin').toString('base64')}`,
        authorization: `Bearer ${token}`,
        'x-request-id': createId,
      },
    });
    expect(created.status).toBe(201);
    const location = created.headers.get('location')!;
    const owner = (await loggedIds(a)).has(createId) ? a : b;
    const other = owner === a ? b : a;
    const uploadId = location.split('/').pop()!;

    // nginx may hand the PATCH to either node; the other one refuses it at once (no such upload).
    let patch: Awaited<ReturnType<typeof startPatch>> | undefined;
    for (let attempt = 0; attempt < 10 && !patch; attempt++) {
      const started = await startPatch(location, total, token, () => uploadBytesOnDisk(owner, uploadId));
      if (started.reachedOwner) patch = started;
      else expect(started.refusedWith).toBe(404);
    }
    expect(patch, 'no PATCH reached the node holding the upload').toBeDefined();
    await stopNode(owner, 'SIGKILL');
    const res = await patch!.finish!();
    expect(res.status).toBe(502);
    expect(res.headers['content-type']).toBe('application/json');
    expect((JSON.parse(res.body) as ErrorJson).error.code).toBe('UNAVAILABLE');
    // The other node is up and logging, and never saw that PATCH.
    expect((await loggedIds(other)).has(patch!.id)).toBe(false);

    // Back to two nodes for the next test.
    owner.server = await spawnServer(owner.env);
  }, 60_000);

  it('with one node down, GET and HEAD (and requests no node received) go to the other; with both down, JSON 502', async () => {
    await stopNode(b, 'SIGKILL');
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const get = newRequestId('get');
      const head = newRequestId('head');
      const post = newRequestId('post');
      ids.push(get, head, post);
      expect((await api('/v1/users/alice', { id: get })).status).toBe(200);
      expect((await api('/v1/users/alice', { id: head, method: 'HEAD' })).status).toBe(200);
      // A POST refused at connection time never reached a node: nginx tries the next one.
      const minted = await api('/v1/upload-tokens', {
        id: post,
        method: 'POST',
        body: JSON.stringify({ userId: 'dan', purpose: 'image' }),
        headers: { 'content-type': 'application/json' },
      });
      expect(minted.status).toBe(201);
      // The access check of /f/ fails over to the live node's internal port too.
      expect((await fetch(fileUrl, { method: i % 2 ? 'HEAD' : 'GET' })).status).toBe(200);
    }
    const seenA = await loggedIds(a);
    expect(ids.filter((id) => !seenA.has(id))).toEqual([]);

    await stopNode(a, 'SIGKILL');
    await expectJsonError(await api('/v1/users/alice', { id: newRequestId('down') }), 502, 'UNAVAILABLE');
    await expectJsonError(await api('/v1/upload-tokens', { id: newRequestId('down'), method: 'POST', body: '{}' }), 502, 'UNAVAILABLE');
    await expectJsonError(await fetch(fileUrl), 502, 'AUTH_UNAVAILABLE');
    // Requests nginx passed on through an error_page of its own (a seek; a PUT, sent once) too.
    await expectJsonError(await fetch(fileUrl, { headers: { Range: 'bytes=5-' } }), 502, 'UNAVAILABLE');
    await expectJsonError(await api('/v1/users/alice', { id: newRequestId('down'), method: 'PUT', body: '{}' }), 502, 'UNAVAILABLE');
  }, 60_000);
});

async function mintUploadToken(nodeUrl: string, apiKey: string, userId: string): Promise<string> {
  const res = await fetch(`${nodeUrl}/v1/upload-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ userId, purpose: 'image', expiresIn: 600 }),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { token: string }).token;
}

/** One request written as it is (what fetch would refuse to send), and the whole answer as text. */
function rawRequest(baseUrl: string, head: string): Promise<string> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(head));
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.once('end', () => resolve(text));
    socket.once('error', reject);
  });
}

/** Bytes of an upload a node has written so far (0 before the first). */
async function uploadBytesOnDisk(node: Node, uploadId: string): Promise<number> {
  return stat(path.join(node.dataDir, 'uploads', uploadId)).then(
    (s) => s.size,
    () => 0,
  );
}

/**
 * A PATCH of `total` bytes through nginx that sends its first megabyte and waits: either a node
 * refuses it at once, or the node holding the upload starts writing it. finish() sends the rest
 * (as far as the connection takes it) and resolves with nginx's answer.
 */
async function startPatch(location: string, total: number, token: string, ownerBytes: () => Promise<number>) {
  const id = newRequestId('patch');
  const req = httpRequest(location, {
    method: 'PATCH',
    headers: {
      'Tus-Resumable': '1.0.0',
      'Upload-Offset': '0',
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': String(total),
      authorization: `Bearer ${token}`,
      'x-request-id': id,
    },
  });
  let answer: { status: number; headers: IncomingMessage['headers']; body: string } | undefined;
  const answered = new Promise<NonNullable<typeof answer>>((resolve, reject) => {
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.once('end', () => resolve((answer = { status: res.statusCode!, headers: res.headers, body })));
      res.once('error', reject);
    });
    req.once('error', reject);
  });
  answered.catch(() => undefined);
  req.write(Buffer.alloc(1_000_000, 7));
  for (let i = 0; ; i++) {
    if (answer) break;
    if ((await ownerBytes()) > 0) {
      return {
        id,
        reachedOwner: true as const,
        refusedWith: undefined,
        async finish() {
          // The rest of the body, for as long as nginx reads it (it stops once it has answered).
          for (let sent = 1_000_000; sent < total && !answer && !req.destroyed; sent += 1_000_000) {
            await new Promise<void>((resolve) => req.write(Buffer.alloc(1_000_000, 7), () => resolve()));
          }
          req.end();
          return answered;
        },
      };
    }
    if (i > 1000) throw new Error('the PATCH was neither refused nor written');
    await new Promise((r) => setTimeout(r, 10));
  }
  req.destroy();
  return { id, reachedOwner: false as const, refusedWith: answer.status, finish: undefined };
}

/**
 * A node that dies after receiving a request and before answering it (it records the request's id
 * and drops the connection) for requests marked `x-die: 1`, and answers anything else with 200.
 */
async function dyingNode(): Promise<{ url: string; received: string[]; close(): Promise<void> }> {
  const received: string[] = [];
  const server: Server = createServer((socket) => {
    let head = '';
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      if (head.includes('\r\n\r\n')) return;
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      if (/\r\nx-die: *1\r\n/i.test(head)) {
        received.push(/\r\nx-request-id: *([^\r]+)/i.exec(head)?.[1] ?? '?');
        socket.destroy();
      } else socket.end('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"status":"ok"}');
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${port}`, received, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

describe('nginx when a node dies after receiving a request', () => {
  let live: Node;

  beforeAll(async () => {
    live = await startNode('node-live', {});
  }, 60_000);
  afterAll(async () => {
    if (live) {
      await stopNode(live, 'SIGTERM');
      await rm(live.dataDir, { recursive: true, force: true });
    }
  });

  // What may be replayed on the live node: only what cannot have had effects.
  const cases: Array<[string, string, string, boolean]> = [
    ['GET', '/v1/users/alice', 'GET of the API', true],
    ['HEAD', '/uploads/nothere', 'tus HEAD', true],
    ['POST', '/v1/upload-tokens', 'POST', false],
    ['PATCH', '/uploads/nothere', 'tus PATCH', false],
    ['DELETE', '/v1/files/nothere', 'DELETE', false],
    ['PUT', '/v1/users/alice', 'PUT', false],
  ];

  it.each(cases)('%s %s (%s): replayed on the other node: %s', async (method, pathname, _what, replayed) => {
    const dying = await dyingNode();
    const nginx = await startNginxOver(
      [
        { url: dying.url, internalUrl: dying.url },
        { url: live.url, internalUrl: live.internalUrl },
      ],
      { CHIPMUNK_DATA_DIR: live.dataDir },
    );
    try {
      // Requests alternate between the nodes: send until one lands on the dying node.
      const sent: string[] = [];
      let answer: Response | undefined;
      for (let i = 0; i < 10 && dying.received.length === 0; i++) {
        const id = newRequestId(method.toLowerCase());
        sent.push(id);
        const body = method === 'POST' || method === 'PUT' ? '{}' : method === 'PATCH' ? 'abc' : undefined;
        answer = await fetch(`${nginx.url}${pathname}`, {
          method,
          body,
          headers: {
            'x-die': '1',
            'x-request-id': id,
            'Tus-Resumable': '1.0.0',
            'Upload-Offset': '0',
            'content-type': method === 'PATCH' ? 'application/offset+octet-stream' : 'application/json',
            authorization: `Bearer ${live.env.CHIPMUNK_API_KEY}`,
          },
        });
        await answer.arrayBuffer().catch(() => undefined);
      }
      expect(dying.received.length).toBe(1);
      const died = dying.received[0]!;
      expect(died).toBe(sent.at(-1));
      const seen = await loggedIds(live);
      expect(seen.has(died)).toBe(replayed);
      if (replayed) expect(answer!.status).not.toBe(502);
      else {
        expect(answer!.status).toBe(502);
        expect(answer!.headers.get('content-type')).toBe('application/json');
      }
    } finally {
      await nginx.close();
      await dying.close();
    }
  });
});

describe('chipmunk nginx-config with several nodes', () => {
  const env = { CHIPMUNK_DATA_DIR: '/srv/chipmunk', CHIPMUNK_INTERNAL_PORT: '8081' };
  const serversOf = (config: string, name: string) => {
    const block = new RegExp(`upstream ${name} \\{([^}]*)\\}`).exec(config)![1]!;
    return [...block.matchAll(/server (\S+);/g)].map((m) => m[1]);
  };

  it('balances over every --upstream, asking each node its own internal port for access', () => {
    const config = nginxConfigCommand(['--listen', '8088', '--upstream', 'http://10.0.0.1:8080', '--upstream', 'http://10.0.0.2:8080'], env);
    expect(serversOf(config, 'chipmunk_app')).toEqual(['10.0.0.1:8080', '10.0.0.2:8080']);
    expect(serversOf(config, 'chipmunk_auth')).toEqual(['10.0.0.1:8081', '10.0.0.2:8081']);
    expect(config).not.toMatch(/\bip_hash\b|\bhash\b|sticky/);
    expect(config).not.toMatch(/proxy_next_upstream [^;]*non_idempotent/);
    expect(config).toMatch(/^\s+proxy_next_upstream error timeout;$/m);
  });

  it('takes the internal endpoints from --auth-upstream, once per node, and refuses a node named twice', () => {
    const config = nginxConfigCommand(
      [
        '--listen',
        '8088',
        '--upstream',
        'http://a:8080',
        '--upstream',
        'http://b:8080',
        '--auth-upstream',
        'http://a:9000',
        '--auth-upstream',
        'http://b:9001',
      ],
      env,
    );
    expect(serversOf(config, 'chipmunk_auth')).toEqual(['a:9000', 'b:9001']);
    expect(() => nginxConfigCommand(['--listen', '8088', '--upstream', 'http://a:8080', '--upstream', 'http://a:8080/'], env)).toThrow(/a:8080 twice/);
  });

  it('renders every error body nginx itself answers from the error table', () => {
    const config = nginxConfigCommand(['--listen', '8088', '--upstream', 'http://a:8080'], env);
    const returns = [...config.matchAll(/return (\d{3}) '([^']*)';/g)];
    expect(returns.length).toBeGreaterThan(8);
    for (const [, status, body] of returns) {
      const parsed = JSON.parse(body!.replace('$chipmunk_too_large', 'x')) as ErrorJson;
      expect(ERROR_STATUS[parsed.error.code]).toBe(Number(status));
    }
    // Every status nginx makes itself on these routes is sent to one of those answers.
    const pages = [...config.matchAll(/error_page ([\d ]+) =/g)].flatMap((m) => m[1]!.trim().split(' '));
    for (const status of ['400', '404', '405', '412', '413', '414', '416', '494', '500', '501', '502', '503', '504']) expect(pages).toContain(status);
    expect(config).not.toMatch(/return \d{3} "/);
  });
});
