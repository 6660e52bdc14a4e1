/**
 * The gateway's upstream connections, black-box: a real Portcullis gateway in front of a raw TCP upstream that
 * answers with scripted bytes, to check that a response is only ever delivered to the request it answers
 * (no response desynchronisation through a reused keep-alive connection) and that odd but valid framing passes.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, call } from './helpers/gateway.ts';
import { API, baseConfig, getToken } from './helpers/oauth.ts';
import { freePort, type RunningServer, startServer } from './helpers/server.ts';

/** What the raw upstream writes for a request, by request path; `later` is written 30 ms after `now`. */
type Script = { now: string; later?: string; close?: boolean };

let server: RunningServer;
let upstream: Server;
let gw: string;
let token: string;
const scripts = new Map<string, Script>();
/** Connections the upstream has accepted. */
let accepted = 0;

function ok(body: string, extra = ''): string {
  return `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

function serve(socket: Socket): void {
  accepted++;
  let buf = '';
  socket.on('error', () => {});
  socket.on('data', (d) => {
    buf += d.toString('latin1');
    for (let end = buf.indexOf('\r\n\r\n'); end >= 0; end = buf.indexOf('\r\n\r\n')) {
      const head = buf.slice(0, end);
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return; // the body is not all here yet
      buf = buf.slice(end + 4 + length);
      const path = head.split(' ')[1] ?? '';
      const s = scripts.get(path) ?? { now: ok(`fresh ${path}`) };
      socket.write(s.now);
      if (s.close) socket.end();
      const later = s.later;
      if (later) setTimeout(() => socket.writable && socket.write(later), 30);
    }
  });
}

beforeAll(async () => {
  upstream = createServer(serve);
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const port = (upstream.address() as { port: number }).port;
  const gwPort = await freePort();
  const base = baseConfig();
  const config = base.config;
  config.gateway = {
    listen: { host: '127.0.0.1', port: gwPort },
    routes: [
      { name: 'raw', path_prefix: '/raw', upstream: `http://127.0.0.1:${port}`, resource: API, scopes: { '*': [] } },
    ],
  };
  server = await startServer(config);
  gw = `http://127.0.0.1:${gwPort}`;
  token = (await getToken(server, base.clients.svc, { scope: 'orders:read' })).access_token;
});

afterAll(async () => {
  await server?.close();
  await new Promise<void>((r) => upstream?.close(() => r()));
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('upstream connection reuse', () => {
  it('a response sent after the answer, while the connection is idle, reaches no one', async () => {
    // A head and part of a body: read as the start of the next answer, it would swallow the real one.
    scripts.set('/raw/idle-1', { now: ok('first'), later: 'HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\nforged' });
    const first = await call(gw, '/raw/idle-1', { headers: bearer(token) });
    expect(first.text).toBe('first');
    await sleep(100); // the forged response has arrived on the idle connection by now
    const second = await call(gw, '/raw/idle-2', { headers: bearer(token) });
    expect(second.status).toBe(200);
    expect(second.text).toBe('fresh /raw/idle-2');
  });

  it('a second response in the same read as the answer reaches no one', async () => {
    scripts.set('/raw/same-1', { now: ok('first') + ok('forged') });
    const first = await call(gw, '/raw/same-1', { headers: bearer(token) });
    expect(first.text).toBe('first');
    const second = await call(gw, '/raw/same-2', { headers: bearer(token) });
    expect(second.text).toBe('fresh /raw/same-2');
  });

  it('a partial stray response after the answer is not glued to the next one', async () => {
    scripts.set('/raw/partial-1', { now: `${ok('first')}HTTP/1.1 200 OK\r\ncontent-length: 6\r\n` });
    const first = await call(gw, '/raw/partial-1', { headers: bearer(token) });
    expect(first.text).toBe('first');
    const second = await call(gw, '/raw/partial-2', { headers: bearer(token) });
    expect(second.status).toBe(200);
    expect(second.text).toBe('fresh /raw/partial-2');
  });

  it('keeps a clean connection alive across requests', async () => {
    await call(gw, '/raw/alive-0', { headers: bearer(token) });
    const before = accepted;
    for (let i = 1; i <= 5; i++) {
      const r = await call(gw, `/raw/alive-${i}`, { headers: bearer(token) });
      expect(r.text).toBe(`fresh /raw/alive-${i}`);
    }
    expect(accepted).toBe(before);
  });
  it("does not reuse a connection past the upstream's Keep-Alive timeout hint (less a second of margin)", async () => {
    await call(gw, '/raw/hint-0', { headers: bearer(token) });
    const before = accepted;
    for (let i = 1; i <= 3; i++) {
      scripts.set(`/raw/hint-${i}`, { now: ok(`hint ${i}`, 'keep-alive: timeout=1\r\n') });
      const r = await call(gw, `/raw/hint-${i}`, { headers: bearer(token) });
      expect(r.text).toBe(`hint ${i}`);
    }
    // The first hinted answer came on the kept connection; each later request needed a new one.
    expect(accepted - before).toBe(2);
  });
});

describe('upstream framing', () => {
  it('skips 1xx informational responses and passes the final one', async () => {
    scripts.set('/raw/early', { now: `HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n${ok('final')}` });
    const r = await call(gw, '/raw/early', { headers: bearer(token) });
    expect(r.status).toBe(200);
    expect(r.text).toBe('final');
  });

  it('passes a chunked response whose chunks arrive in one read, whole and in order (GET and POST)', async () => {
    const now = 'HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n';
    scripts.set('/raw/chunked', { now });
    for (const method of ['GET', 'POST']) {
      const body = method === 'POST' ? 'a request body' : undefined;
      const r = await call(gw, '/raw/chunked', { method, headers: bearer(token), body });
      expect(r.text, method).toBe('hello world');
    }
  });

  it('passes a response delimited by closing the connection', async () => {
    scripts.set('/raw/eof', { now: 'HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end', close: true });
    const eof = await call(gw, '/raw/eof', { headers: bearer(token) });
    expect(eof.status).toBe(200);
    expect(eof.text).toBe('until the end');
  });

  it('refuses ambiguous framing from the upstream (502, nothing passed on)', async () => {
    const bad = [
      'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
      'HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!',
      'HTTP/1.1 200 OK\r\nx-folded: a\r\n b\r\ncontent-length: 2\r\n\r\nok',
      'HTTP/1.1 200 OK\r\nx-bad: a\x00b\r\ncontent-length: 2\r\n\r\nok',
      'HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n',
    ];
    for (const [i, now] of bad.entries()) {
      scripts.set(`/raw/bad-${i}`, { now });
      const r = await call(gw, `/raw/bad-${i}`, { headers: bearer(token) });
      expect(r.status, `${JSON.stringify(now)} -> ${r.text}`).toBe(502);
      expect(r.json?.error).toBe('upstream_unavailable');
    }
  });
});
