/** A real upstream API (node:http) and a raw HTTP client for the gateway suites. */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface Upstream {
  url: string;
  port: number;
  /** Every request that reached the upstream, in order. */
  requests: RecordedRequest[];
  /** Requests whose path starts with `prefix` go to `handler` instead of the default JSON echo. */
  on(prefix: string, handler: UpstreamHandler): void;
  close(): Promise<void>;
}

/** Starts an upstream on a free loopback port. By default it answers 200 with {method, url, headers} as JSON. */
export async function startUpstream(): Promise<Upstream> {
  const requests: RecordedRequest[] = [];
  const handlers: Array<[string, UpstreamHandler]> = [];
  const server = createServer((req, res) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const h = handlers.find(([p]) => (req.url ?? '').startsWith(p));
    if (h) return h[1](req, res);
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    on(prefix, handler) {
      handlers.unshift([prefix, handler]);
    },
    close() {
      server.closeAllConnections();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

export interface RawResult {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: Record<string, unknown> | undefined;
}

/**
 * One request with node:http, so the test controls what fetch would refuse or normalise: repeated headers,
 * Connection, dot segments in the path.
 */
export function call(
  base: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string | string[]>; body?: string | Buffer } = {},
): Promise<RawResult> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: u.hostname, port: u.port, method: opts.method ?? 'GET', path, headers: opts.headers ?? {}, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown> | undefined;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

export const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` });
