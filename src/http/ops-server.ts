import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { OffsetClock } from '../lib/clock.ts';
import type { HttpMetrics } from './metrics.ts';

export interface OpsServerOptions {
  host: string;
  port: number;
  log: Logger;
  /** For /readyz: whether this node may take traffic, and the facts to show. */
  readiness(): { ready: boolean; details: Record<string, unknown> };
  /** Prometheus metrics served at /metrics. */
  metrics?: Pick<HttpMetrics, 'registry'> | undefined;
  /** PORTCULLIS_TEST_CLOCK=1 only: POST /__test__/clock {"advance_seconds": N} moves this clock. */
  testClock?: { clock: OffsetClock; onAdvance(): void } | undefined;
}

export interface RunningOpsServer {
  url: string;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * The operations listener of a node that serves no authorization server (`--role gateway`), on `listen`: /healthz
 * (the process is up), /readyz (it may take traffic; 503 with the reason otherwise) and /metrics, so the API listener stays
 * entirely the upstream APIs'. Nothing else is served.
 */
export async function startOpsServer(o: OpsServerOptions): Promise<RunningOpsServer> {
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '').split('?')[0];
    const get = req.method === 'GET' || req.method === 'HEAD';
    if (path === '/healthz' && get) return send(res, 200, { status: 'ok' });
    if (path === '/readyz' && get) {
      const r = o.readiness();
      return send(res, r.ready ? 200 : 503, { status: r.ready ? 'ready' : 'not_ready', ...r.details });
    }
    if (path === '/metrics' && get && o.metrics) {
      const text = await o.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': o.metrics.registry.contentType, 'cache-control': 'no-store' });
      res.end(text);
      return;
    }
    if (path === '/__test__/clock' && req.method === 'POST' && o.testClock) {
      let seconds: number;
      try {
        seconds = Number((JSON.parse(await readBody(req, 1024)) as { advance_seconds?: unknown }).advance_seconds ?? 0);
      } catch {
        return send(res, 400, {
          error: 'invalid_request',
          error_description: 'body must be JSON {"advance_seconds": N}',
        });
      }
      if (!Number.isFinite(seconds) || seconds < 0)
        return send(res, 400, {
          error: 'invalid_request',
          error_description: 'advance_seconds must be a non-negative number',
        });
      o.testClock.clock.advance(seconds * 1000);
      o.testClock.onAdvance();
      return send(res, 200, { now_ms: o.testClock.clock.nowMs(), key_changes: [] });
    }
    req.resume();
    send(res, 404, {
      error: 'not_found',
      error_description: 'this listener serves only /healthz, /readyz and /metrics',
    });
  };
  const server = createServer({ headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
    handle(req, res).catch((err) => {
      o.log.error({ err }, 'operations request failed');
      if (!res.headersSent) send(res, 500, { error: 'server_error' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
