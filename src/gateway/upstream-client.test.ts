import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { type ExchangeSink, UpstreamPool } from './upstream-client.ts';

function sink(): ExchangeSink & { failed: Promise<string> } {
  let fail: (code: string) => void = () => {};
  const failed = new Promise<string>((r) => {
    fail = r;
  });
  return {
    failed,
    onHead: () => fail('answered'),
    onData: () => {},
    onEnd: () => {},
    onFail: (code) => fail(code),
  };
}

describe('UpstreamPool', () => {
  it('refuses a header value or target with a control character before connecting (no header injection)', async () => {
    let connections = 0;
    const server = createServer((s) => {
      connections++;
      s.end('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const pool = new UpstreamPool(`http://127.0.0.1:${port}`, { connections: 2, connectTimeoutMs: 1000 });
    try {
      const cases: Array<[string, string[]]> = [
        ['/a', ['x-auth-sub', 'alice\r\nx-admin: yes']],
        ['/a', ['x-auth-sub', 'alice\nx-admin: yes']],
        ['/a', ['x-auth-sub', 'nul\0']],
        ['/a HTTP/1.1\r\nx-admin: yes\r\n\r\nGET /b', []],
        ['/a b', []],
      ];
      for (const [target, headers] of cases) {
        const s = sink();
        pool.request('GET', target, headers, 1000, s);
        expect(await s.failed).toBe('UPSTREAM_BAD_REQUEST');
      }
      expect(connections).toBe(0);
      const s = sink();
      pool.request('GET', '/a', ['x-auth-sub', 'alice'], 1000, s);
      expect(await s.failed).toBe('answered');
      expect(connections).toBe(1);
    } finally {
      await pool.close();
      server.close();
    }
  });

  it('speaks plain http only', () => {
    expect(() => new UpstreamPool('https://127.0.0.1:1', { connections: 1, connectTimeoutMs: 1000 })).toThrow();
  });
});
