import { createRequire } from 'node:module';
import { connect, type Socket } from 'node:net';

/**
 * A lean HTTP/1.1 client for the gateway's body-less upstream requests (GET, HEAD, DELETE, OPTIONS without a body:
 * nearly all API reads), measured at about a third less CPU per request than undici's dispatch for the same
 * pass-through (bench/README.md). Requests with a body still go through undici.
 *
 * It parses nothing itself: responses are read by Node's own llhttp binding (the parser node:http's client uses),
 * in strict mode (no lenient flags). What it adds is what a proxy must get right about connection reuse, because a
 * response read on the wrong request is a cross-client leak (response desynchronisation):
 * - one request at a time per connection (no pipelining);
 * - a connection goes back to the pool only after a complete final response that allows keep-alive, and only once
 *   the read that completed it has been fully parsed: any byte after the response (an unsolicited second
 *   response, a stray partial one) or arriving while idle destroys the connection;
 * - idle connections are closed after `idleMs`, before a typical upstream keep-alive timeout closes them under a
 *   request;
 * - 1xx informational responses are skipped; 101 (upgrade) is refused, the gateway never asks for one.
 */

interface NativeParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  close(): void;
  [callback: number]: unknown;
}
interface NativeParserClass {
  new (): NativeParser;
  RESPONSE: number;
  kOnMessageBegin: number;
  kOnHeaders: number;
  kOnHeadersComplete: number;
  kOnBody: number;
  kOnMessageComplete: number;
  kLenientNone: number;
}
const { HTTPParser } = createRequire(import.meta.url)('_http_common') as { HTTPParser: NativeParserClass };

/** What the gateway's response writer implements (forward.ts ProxyHandler). */
export interface ExchangeSink {
  /** Header names lower-case, [name, value, ...] as received. */
  onHead(control: ExchangeControl, statusCode: number, headers: string[]): void;
  onData(control: ExchangeControl, chunk: Buffer): void;
  onEnd(): void;
  /** `timeout`: the upstream did not connect, answer or send in time; otherwise it failed or was unreachable. */
  onFail(code: string, timeout: boolean): void;
}

export interface ExchangeControl {
  pause(): void;
  resume(): void;
  abort(): void;
}

interface Exchange {
  head: string;
  isHead: boolean;
  timeoutMs: number;
  sink: ExchangeSink;
}

/** RFC 9110 §5.5 field values as node:http accepts them (no CR, LF, NUL or other controls but HTAB). */
const BAD_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
/** RFC 9112 §3.2 origin-form: no whitespace or controls. */
const BAD_TARGET = /[^\x21-\x7e\x80-\xff]/;

/**
 * The upstream's own idle limit from `Keep-Alive: timeout=N` (seconds), less a second of margin so a request is
 * never written into a connection the upstream is closing; `current` when there is no usable hint.
 */
function keepAliveLimit(value: string, current: number): number {
  const m = /(?:^|[,;\s])timeout\s*=\s*(\d+)/i.exec(value);
  if (!m) return current;
  return Math.min(current, Math.max(0, Number(m[1]) * 1000 - 1000));
}

class Connection implements ExchangeControl {
  readonly socket: Socket;
  private readonly parser: NativeParser;
  private readonly pool: UpstreamPool;
  private ex: Exchange | undefined;
  /** A final response's head has been passed on (the exchange is past the point of a clean 502/504). */
  private answered = false;
  /** The final response is complete: release after the current read is parsed. */
  private completed = false;
  private keepAlive = false;
  private partialHeaders: string[] = [];
  private paused = false;
  closed = false;
  /** In the pool's idle list. */
  isIdle = false;
  /** How long this connection may stay idle (lowered by the upstream's Keep-Alive: timeout hint). */
  idleLimit: number;
  /** When the current exchange must have progressed by (connect, head, next body chunk); 0 while paused or idle. */
  deadline = 0;
  idleSince = 0;

  constructor(pool: UpstreamPool) {
    this.pool = pool;
    this.idleLimit = pool.idleMs;
    this.socket = connect({ host: pool.host, port: pool.port });
    this.socket.setNoDelay(true);
    this.parser = new HTTPParser();
    this.parser.initialize(HTTPParser.RESPONSE, {}, 0, HTTPParser.kLenientNone);
    this.parser[HTTPParser.kOnMessageBegin] = () => this.onMessageBegin();
    this.parser[HTTPParser.kOnHeaders] = (headers: string[]) => {
      for (const h of headers) this.partialHeaders.push(h);
    };
    this.parser[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      statusCode: number,
      _statusMessage: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ) => this.onHeadersComplete(headers, statusCode, upgrade, keepAlive);
    this.parser[HTTPParser.kOnBody] = (chunk: Buffer) => this.onBody(chunk);
    this.parser[HTTPParser.kOnMessageComplete] = () => this.onMessageComplete();
    this.socket.once('connect', () => {
      if (this.ex && this.deadline !== 0) this.deadline = performance.now() + this.ex.timeoutMs;
    });
    this.socket.on('data', (d: Buffer) => this.onSocketData(d));
    this.socket.on('end', () => this.onSocketEnd());
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(err.code ?? 'ECONNRESET', false));
    this.socket.on('close', () => {
      this.fail('ECONNRESET', false);
      // Freed only here, never from inside one of its own callbacks (destroy() can run during execute()).
      this.parser.close();
    });
  }

  send(ex: Exchange): void {
    this.ex = ex;
    this.answered = false;
    this.completed = false;
    this.paused = false;
    this.deadline = performance.now() + (this.socket.connecting ? this.pool.connectTimeoutMs : ex.timeoutMs);
    this.socket.write(ex.head, 'latin1');
  }

  private onMessageBegin(): void {
    if (this.closed) return;
    // A response that belongs to no request, or a second one after the final response: never pass it on.
    if (!this.ex || this.completed) this.destroy();
  }

  private onHeadersComplete(
    headers: string[] | undefined,
    statusCode: number,
    upgrade: boolean,
    keepAlive: boolean,
  ): number {
    const ex = this.ex;
    if (this.closed) return 0;
    if (!ex || this.completed) {
      this.destroy();
      return 0;
    }
    let raw = headers;
    if (raw === undefined) {
      raw = this.partialHeaders;
      this.partialHeaders = [];
    }
    if (upgrade || statusCode === 101) {
      this.fail('UPSTREAM_UPGRADE', false);
      return 0;
    }
    // 1xx (RFC 9110 §15.2): informational, the final response follows on the same connection.
    if (statusCode < 200) return 0;
    this.answered = true;
    this.keepAlive = keepAlive;
    const out: string[] = new Array(raw.length);
    for (let i = 0; i < raw.length; i += 2) {
      const name = (raw[i] as string).toLowerCase();
      out[i] = name;
      out[i + 1] = raw[i + 1] as string;
      if (name === 'keep-alive') this.idleLimit = keepAliveLimit(raw[i + 1] as string, this.idleLimit);
    }
    this.deadline = performance.now() + ex.timeoutMs;
    try {
      ex.sink.onHead(this, statusCode, out);
    } catch {
      // Whatever the writer could not take (a field node:http refuses to send): the exchange fails, cleanly.
      this.fail('UPSTREAM_BAD_RESPONSE', false);
      return 0;
    }
    // 1 tells llhttp the response has no body (RFC 9110 §9.3.2: a HEAD response's Content-Length is not framing).
    return ex.isHead ? 1 : 0;
  }

  private onBody(chunk: Buffer): void {
    const ex = this.ex;
    if (this.closed || !ex || !this.answered) return;
    if (!this.paused) this.deadline = performance.now() + ex.timeoutMs;
    try {
      ex.sink.onData(this, chunk);
    } catch {
      this.fail('UPSTREAM_BAD_RESPONSE', false);
    }
  }

  private onMessageComplete(): void {
    if (this.closed || !this.answered) return; // (or a 1xx ended)
    const ex = this.ex;
    this.completed = true;
    this.deadline = 0;
    ex?.sink.onEnd();
  }

  private onSocketData(d: Buffer): void {
    if (!this.ex) {
      // Bytes on an idle connection: whatever they are, they must not be read as the next request's response.
      this.destroy();
      return;
    }
    const r = this.parser.execute(d);
    if (r instanceof Error) {
      this.fail((r as { code?: string }).code ?? 'HPE_INVALID', false);
      return;
    }
    if (this.completed && !this.closed) {
      // The whole read was parsed without a second message beginning: safe to reuse.
      this.ex = undefined;
      if (this.keepAlive) this.pool.release(this);
      else this.destroy();
    }
  }

  private onSocketEnd(): void {
    // A response delimited by the connection closing (RFC 9112 §6.3 rule 8) ends here.
    if (this.ex && this.answered && !this.completed) {
      const r = this.parser.finish();
      if (r instanceof Error) this.fail((r as { code?: string }).code ?? 'HPE_INVALID', false);
    }
    if (this.ex && !this.completed) {
      this.fail('ECONNRESET', false);
      return;
    }
    this.ex = undefined;
    this.destroy();
  }

  /** Ends the exchange in progress, if any, with an error; the connection is not reused. */
  fail(code: string, timeout: boolean): void {
    const ex = this.ex;
    this.ex = undefined;
    this.destroy();
    if (ex && !this.completed) ex.sink.onFail(code, timeout);
  }

  pause(): void {
    this.paused = true;
    this.deadline = 0;
    this.socket.pause();
  }

  resume(): void {
    this.paused = false;
    if (this.ex) this.deadline = performance.now() + this.ex.timeoutMs;
    this.socket.resume();
  }

  /** The client went away: the response in progress is abandoned, and so is the connection. */
  abort(): void {
    this.ex = undefined;
    this.destroy();
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    this.deadline = 0;
    this.socket.destroy();
    this.pool.forget(this);
  }
}

/** Keep-alive connections to one upstream origin (plain http), at most `max`, requests queued beyond that. */
export class UpstreamPool {
  readonly host: string;
  readonly port: number;
  readonly connectTimeoutMs: number;
  private readonly max: number;
  readonly idleMs: number;
  private readonly authority: string;
  private readonly idle: Connection[] = [];
  private readonly all = new Set<Connection>();
  private readonly queue: Exchange[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(origin: string, opts: { connections: number; connectTimeoutMs: number; idleMs?: number }) {
    const u = new URL(origin);
    if (u.protocol !== 'http:') throw new Error('UpstreamPool speaks plain http only');
    this.host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
    this.port = Number(u.port || 80);
    this.authority = u.host;
    this.max = opts.connections;
    this.connectTimeoutMs = opts.connectTimeoutMs;
    this.idleMs = opts.idleMs ?? 4000;
    // One coarse sweep instead of a timer per request: timeouts are whole seconds (route timeout, connect_timeout).
    this.timer = setInterval(() => this.sweep(), 100);
    this.timer.unref();
  }

  /**
   * Sends a body-less request. `headers` are [name, value, ...] with lower-case names, hop-by-hop fields already
   * removed (forward.ts); a value or target with a control character is refused before anything is sent.
   */
  request(method: string, target: string, headers: readonly string[], timeoutMs: number, sink: ExchangeSink): void {
    if (BAD_TARGET.test(target)) {
      sink.onFail('UPSTREAM_BAD_REQUEST', false);
      return;
    }
    let head = `${method} ${target} HTTP/1.1\r\nhost: ${this.authority}\r\n`;
    for (let i = 0; i < headers.length; i += 2) {
      const v = headers[i + 1] as string;
      if (BAD_VALUE.test(v)) {
        sink.onFail('UPSTREAM_BAD_REQUEST', false);
        return;
      }
      head += `${headers[i]}: ${v}\r\n`;
    }
    head += '\r\n';
    const ex: Exchange = { head, isHead: method === 'HEAD', timeoutMs, sink };
    const c = this.take();
    if (c) c.send(ex);
    else this.queue.push(ex);
  }

  private take(): Connection | undefined {
    const now = performance.now();
    for (let c = this.idle.pop(); c; c = this.idle.pop()) {
      c.isIdle = false;
      if (!c.closed && now - c.idleSince < c.idleLimit) return c;
      c.destroy();
    }
    if (this.all.size >= this.max) return undefined;
    const c = new Connection(this);
    this.all.add(c);
    return c;
  }

  release(c: Connection): void {
    const next = this.queue.shift();
    if (next) {
      c.send(next);
      return;
    }
    c.idleSince = performance.now();
    c.isIdle = true;
    this.idle.push(c);
  }

  forget(c: Connection): void {
    this.all.delete(c);
    if (c.isIdle) {
      c.isIdle = false;
      const i = this.idle.indexOf(c);
      if (i >= 0) this.idle.splice(i, 1);
    }
    // A slot is free: start the next queued request on a new connection.
    const next = this.queue.length > 0 ? this.take() : undefined;
    if (next) next.send(this.queue.shift() as Exchange);
  }

  private sweep(): void {
    const now = performance.now();
    for (const c of this.all) {
      if (c.deadline !== 0 && now > c.deadline) c.fail('UPSTREAM_TIMEOUT', true);
      else if (c.isIdle && now - c.idleSince >= c.idleLimit) c.destroy();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const ex of this.queue.splice(0)) ex.sink.onFail('UPSTREAM_CLOSED', false);
    for (const c of [...this.all]) c.destroy();
  }
}
