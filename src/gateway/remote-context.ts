import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { type Config, type GatewayConfig, SIGNING_ALGORITHMS } from '../config/schema.ts';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { HttpMetrics } from '../http/metrics.ts';
import { Kek } from '../keys/kek.ts';
import type { Clock } from '../lib/clock.ts';
import type { Limiter } from '../lib/rate-limiter.ts';
import type { GroupCommitter } from '../storage/group-commit.ts';
import type { ReplayStore, Storage } from '../storage/ports.ts';
import type { GatewayContext, GatewayKeys } from './context.ts';
import { RemoteRevocationFeed } from './remote-feed.ts';

export type RemoteConfig = NonNullable<GatewayConfig['remote']>;

/** JWK members only a private or symmetric key has: a JWKS carrying them is not a set of public keys. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];

/**
 * The issuer's public keys as the revocation feed last delivered them. A kid verifies iff the authorization server
 * publishes it now: a key it stops publishing (retired, or revoked by an emergency rotation) stops verifying here
 * at the next feed answer, cached tokens included (policy.ts asks isTrustedKid on every request).
 */
export class RemoteKeys implements GatewayKeys {
  private byKid = new Map<string, Record<string, unknown>>();

  get size(): number {
    return this.byKid.size;
  }

  get kids(): string[] {
    return [...this.byKid.keys()];
  }

  /** Replaces every key with the published set; entries that are not public signing keys we accept are skipped. */
  replace(jwks: { keys: Record<string, unknown>[] }): void {
    const next = new Map<string, Record<string, unknown>>();
    for (const k of Array.isArray(jwks.keys) ? jwks.keys : []) {
      if (!k || typeof k !== 'object') continue;
      if (typeof k.kid !== 'string' || typeof k.kty !== 'string') continue;
      if (typeof k.alg !== 'string' || !(SIGNING_ALGORITHMS as readonly string[]).includes(k.alg)) continue;
      if (PRIVATE_MEMBERS.some((m) => m in k)) continue;
      next.set(k.kid, k);
    }
    this.byKid = next;
  }

  publicJwk(kid: string): Record<string, unknown> | undefined {
    return this.byKid.get(kid);
  }

  isTrustedKid(kid: string): boolean {
    return this.byKid.has(kid);
  }
}

export interface RemoteGatewayOptions {
  config: Config;
  remote: RemoteConfig;
  clock: Clock;
  /** The gateway node's own storage: its events (gateway.denied, gateway.usage, ...) and the DPoP replay cache. */
  storage: Storage;
  events: GroupCommitter;
  limiter: Limiter;
  log: Logger;
  metrics: HttpMetrics;
  /** DPoP proof jtis in Redis, shared by every node, when redis.url is set; else the node's storage. */
  dpopReplay?: Pick<ReplayStore, 'useOnce'> | undefined;
  fetch?: typeof fetch;
}

/**
 * What a gateway running alone (`portcullis start --role gateway`) verifies with, built without the authorization
 * server: the issuer's keys and the revocation set both come from the server's GET /revocations feed
 * (RemoteRevocationFeed); events and DPoP proof ids go to the node's own storage. Until the first complete read of
 * the feed, and whenever the feed has been unreachable longer than revocation.max_feed_lag, the set reports itself
 * unhealthy and the gateway refuses every token (fail closed). It holds no KEK and no private key: the DPoP nonce
 * key (src/oauth/dpop.ts derives it from `kek`) is derived from the feed client's secret instead, so every gateway
 * node following the server with the same credentials issues and accepts the same nonces.
 */
export class RemoteGatewaySource {
  readonly keys = new RemoteKeys();
  readonly feed: RemoteRevocationFeed;
  readonly ctx: GatewayContext;
  private readonly o: RemoteGatewayOptions;
  private readonly startedAt: number;
  private lostSince: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(o: RemoteGatewayOptions) {
    this.o = o;
    const { config, remote, clock, log } = o;
    const issuer = (remote.issuer ?? remote.url).replace(/\/$/, '');
    this.startedAt = clock.nowMs();
    this.feed = new RemoteRevocationFeed({
      url: remote.url,
      clientId: remote.client_id,
      clientSecret: remote.client_secret,
      clock,
      maxFeedLagMs: config.revocation.max_feed_lag * 1000,
      log,
      onJwks: (jwks) => {
        this.keys.replace(jwks);
        log.info({ kids: this.keys.kids }, 'issuer keys received from the revocation feed');
      },
      fetch: o.fetch,
    });
    const nonceKey = createHash('sha256')
      .update(`portcullis gateway dpop nonce key\u0000${remote.client_secret}`)
      .digest();
    this.ctx = {
      config: { ...config, issuer },
      clock,
      storage: o.storage,
      kek: new Kek(nonceKey, 'gateway.remote.client_secret'),
      revocations: this.feed.set,
      events: o.events,
      limiter: o.limiter,
      log,
      metrics: o.metrics,
      dpopReplay: o.dpopReplay,
      keys: this.keys,
    };
  }

  /** Starts following the feed; resolves after the first complete read, or after waitMs (still refusing then). */
  async start(waitMs: number): Promise<void> {
    const lag = this.o.config.revocation.max_feed_lag * 1000;
    this.timer = setInterval(() => this.checkHealth(), Math.max(100, Math.min(1000, lag / 4)));
    this.timer.unref();
    await this.feed.start(waitMs);
  }

  /** Tokens may be accepted: the feed was read in full at least once and is current within the bound. */
  ready(nowMs = this.o.clock.nowMs()): boolean {
    return this.feed.synced && this.keys.size > 0 && this.feed.healthy(nowMs);
  }

  /** Drops revocation records whose tokens have all expired. */
  purge(): void {
    this.feed.set.purge(this.o.clock.nowMs());
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.feed.close();
  }

  /** revocation.feed_lost once the gateway starts failing closed, revocation.feed_restored when it stops. */
  private checkHealth(): void {
    const now = this.o.clock.nowMs();
    // Refusing before the first read is expected for a moment at start-up; it is an outage only past the bound.
    const failing = !this.feed.healthy(now) && (this.feed.synced || now - this.startedAt > this.feed.set.maxFeedLagMs);
    if (failing && this.lostSince === undefined) {
      const since = this.feed.feedDownSince;
      this.lostSince = since !== undefined && Number.isFinite(since) ? since : this.startedAt;
      this.o.log.error(
        { url: this.o.remote.url, down_ms: now - this.lostSince, synced: this.feed.synced },
        'remote revocation feed down longer than revocation.max_feed_lag: refusing every token',
      );
      this.write({
        type: 'revocation.feed_lost',
        at: now,
        actor: 'revocation_feed',
        data: {
          down_since: new Date(this.lostSince).toISOString(),
          max_feed_lag_ms: this.feed.set.maxFeedLagMs,
          channels: ['remote'],
          remote_url: this.o.remote.url,
        },
      });
    } else if (!failing && this.lostSince !== undefined) {
      const downMs = now - this.lostSince;
      this.lostSince = undefined;
      this.write({
        type: 'revocation.feed_restored',
        at: now,
        actor: 'revocation_feed',
        data: { channel: 'remote', down_ms: downMs, remote_url: this.o.remote.url },
      });
    }
  }

  private write(e: SecurityEvent): void {
    this.o.events.write(e).catch((err) => this.o.log.error({ err, type: e.type }, 'event not written'));
  }
}
