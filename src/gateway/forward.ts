import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { type Dispatcher, Pool } from 'undici';
import type { Route } from './routes.ts';
import { type ExchangeControl, type ExchangeSink, UpstreamPool } from './upstream-client.ts';
import type { GatewayToken } from './verify-token.ts';

/**
 * RFC 9110 §7.6.1 hop-by-hop fields (and the obsolete ones peers still send): they describe one connection and are
 * never forwarded. host is set for the upstream, expect is answered here, and the forwarding headers are replaced
 * by the gateway's own (a client could otherwise claim any address).
 */
const REQUEST_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'proxy-authorization',
  'proxy-authenticate',
  'host',
  'expect',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-port',
  'x-real-ip',
]);

const RESPONSE_DROP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
]);

/** The request's headers read once: names lower-cased, and the few the gateway itself needs. */
export interface ScannedHeaders {
  /** [name, value, name, value, ...] with lower-case names, in the order received. */
  fields: string[];
  authorization: string[];
  dpop: string[];
  host: string | undefined;
  /** Field names listed in Connection (RFC 9110 §7.6.1), lower-case. */
  connection: string[] | undefined;
  /** Whether the request has a body (Content-Length above 0, or Transfer-Encoding). */
  hasBody: boolean;
}

export function scanHeaders(raw: readonly string[]): ScannedHeaders {
  const fields: string[] = new Array(raw.length);
  const s: ScannedHeaders = {
    fields,
    authorization: [],
    dpop: [],
    host: undefined,
    connection: undefined,
    hasBody: false,
  };
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    fields[i] = name;
    fields[i + 1] = value;
    switch (name) {
      case 'authorization':
        s.authorization.push(value);
        break;
      case 'dpop':
        s.dpop.push(value);
        break;
      case 'host':
        s.host = value;
        break;
      case 'connection':
        for (const t of value.split(',')) {
          const n = t.trim().toLowerCase();
          if (!n) continue;
          if (s.connection) s.connection.push(n);
          else s.connection = [n];
        }
        break;
      case 'content-length':
        if (value !== '0') s.hasBody = true;
        break;
      case 'transfer-encoding':
        s.hasBody = true;
        break;
    }
  }
  return s;
}

export interface ForwardInput {
  req: IncomingMessage;
  res: ServerResponse;
  route: Route;
  token: GatewayToken;
  headers: ScannedHeaders;
  /** Path and query for the upstream. */
  path: string;
  clientIp: string;
}

export interface ForwarderOptions {
  connections: number;
  connectTimeoutMs: number;
  identityHeaderPrefix: string;
  /** gateway.public_origin: what X-Forwarded-Proto/Host say; else http and the request's Host. */
  publicOrigin?: string | undefined;
  log: Logger;
}

/**
 * Forwards allowed requests with one undici pool per upstream origin. Bodies stream both ways with backpressure
 * (nothing is buffered whole); a late upstream is answered 504 and an unreachable one 502, with no internal detail.
 */
export class Forwarder {
  private readonly pools = new Map<string, Pool>();
  private readonly leanPools = new Map<string, UpstreamPool>();
  private readonly opts: ForwarderOptions;
  private readonly idSub: string;
  private readonly idClient: string;
  private readonly idScope: string;
  private readonly idJti: string;
  private readonly forwardedProto: string;
  private readonly forwardedHost: string | undefined;

  constructor(opts: ForwarderOptions) {
    this.opts = opts;
    const origin = opts.publicOrigin === undefined ? undefined : new URL(opts.publicOrigin);
    this.forwardedProto = origin ? origin.protocol.slice(0, -1) : 'http';
    this.forwardedHost = origin?.host;
    const p = opts.identityHeaderPrefix;
    this.idSub = `${p}sub`;
    this.idClient = `${p}client-id`;
    this.idScope = `${p}scope`;
    this.idJti = `${p}jti`;
  }

  private pool(origin: string): Pool {
    let p = this.pools.get(origin);
    if (!p) {
      p = new Pool(origin, {
        connections: this.opts.connections,
        pipelining: 1,
        connect: { timeout: this.opts.connectTimeoutMs },
      });
      this.pools.set(origin, p);
    }
    return p;
  }

  private leanPool(origin: string): UpstreamPool {
    let p = this.leanPools.get(origin);
    if (!p) {
      p = new UpstreamPool(origin, {
        connections: this.opts.connections,
        connectTimeoutMs: this.opts.connectTimeoutMs,
      });
      this.leanPools.set(origin, p);
    }
    return p;
  }

  /** The header list sent upstream. */
  upstreamHeaders(input: ForwardInput): string[] {
    const { route, token, headers } = input;
    const prefix = this.opts.identityHeaderPrefix;
    const listed = headers.connection;
    const f = headers.fields;
    const out: string[] = [];
    for (let i = 0; i < f.length; i += 2) {
      const name = f[i] as string;
      if (REQUEST_DROP.has(name) || name.startsWith(prefix)) continue;
      if (listed?.includes(name)) continue;
      if ((name === 'authorization' || name === 'dpop') && !route.forwardAuthorization) continue;
      out.push(name, f[i + 1] as string);
    }
    out.push('x-forwarded-for', input.clientIp, 'x-forwarded-proto', this.forwardedProto);
    const host = this.forwardedHost ?? headers.host;
    if (host !== undefined) out.push('x-forwarded-host', host);
    if (route.identityHeaders)
      out.push(this.idSub, token.sub, this.idClient, token.clientId, this.idScope, token.scope, this.idJti, token.jti);
    return out;
  }

  forward(input: ForwardInput): void {
    const { req, res, route } = input;
    const handler = new ProxyHandler(res, route.name, this.opts.log);
    // One shared listener (no closure per request): the handler is found on the response.
    (res as HandledResponse)[kHandler] = handler;
    res.once('close', onClientClose);
    if (!input.headers.hasBody && route.origin.startsWith('http:')) {
      this.leanPool(route.origin).request(
        req.method as string,
        input.path,
        this.upstreamHeaders(input),
        route.timeoutMs,
        handler,
      );
      return;
    }
    try {
      this.pool(route.origin).dispatch(
        {
          path: input.path,
          method: req.method as Dispatcher.HttpMethod,
          headers: this.upstreamHeaders(input),
          body: input.headers.hasBody ? req : null,
          headersTimeout: route.timeoutMs,
          bodyTimeout: route.timeoutMs,
        },
        handler,
      );
    } catch (err) {
      handler.onResponseError(undefined, err as Error);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values(), ...this.leanPools.values()].map((p) => p.close()));
    this.pools.clear();
    this.leanPools.clear();
  }
}

const kHandler = Symbol('proxyHandler');
type HandledResponse = ServerResponse & { [kHandler]?: ProxyHandler };

function onClientClose(this: HandledResponse): void {
  this[kHandler]?.clientClosed();
}

function uncork(h: ProxyHandler): void {
  h.uncork();
}

/** A single Content-Length value as a number, or -1 (absent, repeated or not a plain decimal). */
function contentLength(v: string | string[] | undefined): number {
  if (typeof v !== 'string' || v.length === 0 || v.length > 15) return -1;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
  }
  return Number(v);
}

/** Names listed in a Connection field value (RFC 9110 §7.6.1), lower-case. */
function connectionTokens(v: string): string[] {
  return v.split(',').map((t) => t.trim().toLowerCase());
}

/**
 * Writes the upstream response to the client as it arrives, with backpressure: undici's handler interface for
 * requests with a body (and https upstreams), the lean client's (upstream-client.ts) for the rest.
 */
class ProxyHandler implements Dispatcher.DispatchHandler, ExchangeSink {
  private readonly res: ServerResponse;
  private readonly route: string;
  private readonly log: Logger;
  private controller: Dispatcher.DispatchController | ExchangeControl | undefined;
  private done = false;
  /** No body byte written yet. */
  private first = true;
  /** The upstream's Content-Length (-1: none or not a plain number). */
  private length = -1;
  private corked = false;

  constructor(res: ServerResponse, route: string, log: Logger) {
    this.res = res;
    this.route = route;
    this.log = log;
  }

  clientClosed(): void {
    // The client went away before the response ended: stop the upstream request too.
    if (this.done) return;
    this.done = true;
    this.controller?.abort(new Error('client closed the connection'));
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    const listed = headers.connection;
    const extra = listed === undefined ? undefined : connectionTokens(String(listed));
    // A flat [name, value, ...] list: node writes it as is, without building and re-validating a header object.
    const out: (string | string[])[] = [];
    for (const name in headers) {
      const v = headers[name];
      if (v === undefined || RESPONSE_DROP.has(name) || extra?.includes(name)) continue;
      out.push(name, v);
    }
    this.res.writeHead(statusCode, out as string[]);
    this.length = contentLength(headers['content-length']);
  }

  onHead(control: ExchangeControl, statusCode: number, headers: string[]): void {
    this.controller = control;
    if (this.done) {
      control.abort();
      return;
    }
    let extra: string[] | undefined;
    for (let i = 0; i < headers.length; i += 2)
      if (headers[i] === 'connection') extra = (extra ?? []).concat(connectionTokens(headers[i + 1] as string));
    const out: string[] = [];
    let length: string | undefined;
    let lengths = 0;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i] as string;
      if (RESPONSE_DROP.has(name) || extra?.includes(name)) continue;
      if (name === 'content-length') {
        length = headers[i + 1];
        lengths++;
      }
      out.push(name, headers[i + 1] as string);
    }
    this.res.writeHead(statusCode, out);
    this.length = lengths === 1 ? contentLength(length) : -1;
  }

  onData(control: ExchangeControl, chunk: Buffer): void {
    if (this.done) {
      control.abort();
      return;
    }
    this.onResponseData(control, chunk);
  }

  onEnd(): void {
    this.onResponseEnd();
  }

  onFail(code: string, timeout: boolean): void {
    this.failed(code, timeout);
  }

  onResponseData(controller: Dispatcher.DispatchController | ExchangeControl, chunk: Buffer): void {
    const res = this.res;
    if (this.first) {
      this.first = false;
      if (chunk.length === this.length) {
        // The whole body in one chunk (the usual small response): end() sends head and body in one write, with no
        // extra tick. The end of the upstream response follows and finds the response already ended.
        this.done = true;
        res.end(chunk);
        return;
      }
      // Hold the socket until the rest of what arrived with this chunk is queued too: head and first chunk then
      // leave in one write instead of two (node writes a response's head and first chunk separately).
      res.cork();
      this.corked = true;
      process.nextTick(uncork, this);
    }
    if (!res.write(chunk)) {
      controller.pause();
      res.once('drain', () => controller.resume());
    }
  }

  /**
   * Must run before end(): while a response is corked, node holds chunked-encoded writes back and end() would send
   * the last chunk (0) before them, so the client would read the rest as the start of the next response.
   */
  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.res.uncork();
  }

  onResponseEnd(): void {
    if (this.done) return;
    this.done = true;
    this.uncork();
    this.res.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    const code = (err as { code?: string }).code ?? 'unknown';
    this.failed(
      code,
      code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT',
    );
  }

  private failed(code: string, timeout: boolean): void {
    if (this.done) return;
    this.done = true;
    const res = this.res;
    if (res.destroyed || res.writableEnded) return;
    if (res.headersSent) {
      // Too late for a status: cut the response so the client sees it incomplete, never silently truncated.
      this.log.warn({ route: this.route, code }, 'upstream failed during the response');
      res.destroy();
      return;
    }
    this.log.warn({ route: this.route, code }, timeout ? 'upstream timed out' : 'upstream unreachable');
    const body = JSON.stringify(
      timeout
        ? { error: 'upstream_timeout', error_description: 'the upstream service did not answer in time' }
        : { error: 'upstream_unavailable', error_description: 'the upstream service could not be reached' },
    );
    res.writeHead(timeout ? 504 : 502, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(body),
    });
    res.end(body);
  }
}
