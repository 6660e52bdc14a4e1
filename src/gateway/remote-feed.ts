import type { Logger } from 'pino';
import type { Clock } from '../lib/clock.ts';
import { RevocationSet } from '../oauth/revocation-set.ts';
import { parseRevocation } from '../storage/bus/bus.ts';
import type { RevocationRecord } from '../storage/ports.ts';

export interface RemoteFeedOptions {
  /** Base URL of the authorization server (its issuer, or an internal address of it). */
  url: string;
  /** A client listed in the server's revocation.feed_clients (client_secret_basic). */
  clientId: string;
  clientSecret: string;
  clock: Clock;
  /** How long the feed may be unreachable before healthy() says no (the server's revocation.max_feed_lag). */
  maxFeedLagMs: number;
  /**
   * Seconds each long poll may wait on the server (at most 25). Default: under half of maxFeedLagMs, so a silently
   * dead connection is noticed (the request times out) before the bound.
   */
  waitSeconds?: number;
  /** Read the whole table again this often, to catch revocations that committed out of id order. */
  resyncMs?: number;
  log?: Logger;
  /** Every answer carries the published signing keys; called when they differ from the last answer. */
  onJwks?: (jwks: { keys: Record<string, unknown>[] }) => void;
  fetch?: typeof fetch;
}

interface FeedAnswer {
  revocations: unknown[];
  last_id: number;
  more: boolean;
  jwks: { keys: Record<string, unknown>[] };
}

/**
 * Keeps a RevocationSet and the issuer's JWKS in sync over HTTP, for a gateway that runs apart from the
 * authorization server (`portcullis start --role gateway`). It long-polls GET {url}/revocations?after=ID&wait=S
 * (the server answers as soon as a revocation commits, or after S seconds with nothing), so a revocation reaches
 * the gateway about as fast as it reaches a server node. After any failure it reads the whole table again
 * (after=0) before trusting the feed. While the server cannot be read (or says its own bus is down: 503), `set.
 * feedDownSince` records since when, and `set.healthy(now)` turns false past maxFeedLagMs: the gateway must then
 * refuse every token until the feed is back.
 */
export class RemoteRevocationFeed {
  readonly set: RevocationSet;
  private readonly o: RemoteFeedOptions;
  private readonly fetchFn: typeof fetch;
  private lastId = 0;
  private lastOkAt: number;
  private needFull = true;
  private lastFull = 0;
  private jwksText = '';
  private stopped = false;
  private syncedOnce = false;
  private abort = new AbortController();
  private loop: Promise<void> | undefined;
  private firstOk: Promise<void>;
  private resolveFirstOk: () => void = () => {};

  constructor(o: RemoteFeedOptions) {
    this.o = o;
    this.fetchFn = o.fetch ?? fetch;
    // The set reconciles through the same endpoint (no wait).
    this.set = new RevocationSet({
      listAfter: async (after) => (await this.request(after, 0)).revocations.map(toRecord),
    });
    this.set.maxFeedLagMs = o.maxFeedLagMs;
    // Down since forever until the first complete read: an empty set must never count as current (healthy() is
    // false until then, so a gateway refuses every token rather than serve with revocations it has not read).
    this.set.feedDownSince = Number.NEGATIVE_INFINITY;
    this.lastOkAt = o.clock.nowMs();
    this.firstOk = new Promise((r) => {
      this.resolveFirstOk = r;
    });
  }

  /** Starts following; resolves after the first complete read, or after waitMs (then the feed counts as down). */
  async start(waitMs = 5000): Promise<void> {
    this.loop ??= this.run();
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.firstOk, new Promise((r) => (t = setTimeout(r, waitMs)))]);
    clearTimeout(t);
  }

  /** Whether tokens may be accepted now (see RevocationSet.healthy). */
  healthy(nowMs = this.o.clock.nowMs()): boolean {
    return this.set.healthy(nowMs);
  }

  /** Whether the whole revocation table (and the JWKS) has been read at least once. */
  get synced(): boolean {
    return this.syncedOnce;
  }

  get feedDownSince(): number | undefined {
    return this.set.feedDownSince;
  }

  async close(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    await this.loop?.catch(() => {});
  }

  private async run(): Promise<void> {
    let backoff = 100;
    while (!this.stopped) {
      try {
        const now = this.o.clock.nowMs();
        if (this.needFull || now - this.lastFull >= (this.o.resyncMs ?? 60_000)) {
          await this.readAll();
          this.needFull = false;
          this.lastFull = now;
          this.up();
        }
        const a = await this.request(this.lastId, this.waitSeconds);
        this.apply(a);
        this.up();
        backoff = 100;
      } catch (err) {
        if (this.stopped) return;
        this.down(err);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 1000);
      }
    }
  }

  private get waitSeconds(): number {
    return this.o.waitSeconds ?? Math.max(1, Math.min(20, Math.floor(this.o.maxFeedLagMs / 2500)));
  }

  private async readAll(): Promise<void> {
    let after = 0;
    for (;;) {
      const a = await this.request(after, 0);
      this.apply(a);
      if (!a.more) return;
      after = a.last_id;
    }
  }

  private apply(a: FeedAnswer): void {
    for (const r of a.revocations.map(toRecord)) this.set.add(r);
    if (a.last_id > this.lastId) this.lastId = a.last_id;
    const text = JSON.stringify(a.jwks);
    if (text !== this.jwksText) {
      this.jwksText = text;
      this.o.onJwks?.(a.jwks);
    }
  }

  private up(): void {
    if (this.set.feedDownSince !== undefined) this.o.log?.info({ url: this.o.url }, 'remote revocation feed connected');
    this.set.feedDownSince = undefined;
    this.set.busLive = true;
    this.lastOkAt = this.o.clock.nowMs();
    this.syncedOnce = true;
    this.resolveFirstOk();
  }

  private down(err: unknown): void {
    if (this.set.feedDownSince === undefined) {
      // Down since the last answer: nothing is known to have arrived after it.
      this.set.feedDownSince = this.lastOkAt;
      this.o.log?.warn(
        { url: this.o.url, err: err instanceof Error ? err.message : String(err) },
        'remote revocation feed lost',
      );
    }
    this.set.busLive = false;
    // Whatever happened while away is read in full before the feed counts as up again.
    this.needFull = true;
  }

  private async request(after: number, wait: number): Promise<FeedAnswer> {
    // Appended to the base URL's path, as the server's other endpoints are to its issuer (discovery).
    const u = new URL(`${this.o.url.replace(/\/+$/, '')}/revocations`);
    u.searchParams.set('after', String(after));
    u.searchParams.set('wait', String(wait));
    const basic = Buffer.from(
      `${encodeURIComponent(this.o.clientId)}:${encodeURIComponent(this.o.clientSecret)}`,
    ).toString('base64');
    // An answer must come within the wait plus a margin; a hung connection counts as down from its last answer.
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(wait * 1000 + 1500)]);
    const res = await this.fetchFn(u, { headers: { authorization: `Basic ${basic}` }, signal });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`revocation feed answered ${res.status}: ${text.slice(0, 200)}`);
    const body = JSON.parse(text) as FeedAnswer;
    if (!Array.isArray(body.revocations) || typeof body.last_id !== 'number' || !body.jwks)
      throw new Error('revocation feed answered something else than a feed page');
    return body;
  }
}

function toRecord(v: unknown): RevocationRecord {
  const r = parseRevocation(v);
  if (!r || !('kind' in r)) throw new Error('revocation feed sent a malformed record');
  return r;
}
