import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { Kek } from '../keys/kek.ts';
import type { KeyManager } from '../keys/manager.ts';
import type { Clock } from '../lib/clock.ts';
import type { Limiter } from '../lib/rate-limiter.ts';
import type { GroupCommitter } from '../storage/group-commit.ts';
import type { ClientRecord, ReplayStore, Storage } from '../storage/ports.ts';
import type { RevocationSet } from './revocation-set.ts';

/** Counters the protocol code reports to; src/http maps them onto Prometheus. */
export interface OAuthMetrics {
  tokenIssued(clientId: string, grantType: string): void;
  tokenFailed(clientId: string, grantType: string, error: string): void;
  /**
   * The gateway checked a token not in its verified-token cache: in full, with a valid or invalid result, or
   * refused from its cache of known-invalid tokens (no signature check).
   */
  gatewayTokenCheck(outcome: 'valid' | 'invalid' | 'invalid_cached'): void;
}

/** Everything the framework-free protocol code needs, built once in main.ts. */
export interface OAuthContext {
  config: Config;
  clock: Clock;
  storage: Storage;
  keys: KeyManager;
  /** The key-encryption key: signing keys and TOTP secrets are encrypted under it at rest. */
  kek: Kek;
  revocations: RevocationSet;
  /** Group-committed event writer for high-rate events; resolves once the event is durable. */
  events: GroupCommitter;
  clients: ClientRegistry;
  metrics: OAuthMetrics;
  /** Rate-limit counters: in process, or in Redis when redis.url is set (identity/rate-limits.ts). */
  limiter: Limiter;
  /** Where DPoP proof jtis are recorded (RFC 9449 §11.1): Redis when redis.url is set; unset, storage.replay. */
  dpopReplay?: Pick<ReplayStore, 'useOnce'> | undefined;
  log: Logger;
  /** Brings in-memory state (keys, revocations, clients) up to date with writes from other processes. */
  refresh(opts?: { force?: boolean }): Promise<void>;
}

/** Per-request facts the HTTP layer passes down. */
export interface RequestMeta {
  requestId: string;
  ip: string;
  userAgent?: string | undefined;
  /** The signed-in browser session (its sid) the request came with, where there is one: pages, not APIs. */
  sessionId?: string | null | undefined;
}

/** The correlation columns every event caused by a request carries (docs/events.md: Correlation). */
export type Correlation = Pick<SecurityEvent, 'request_id' | 'ip' | 'session_id'>;

export function correlation(meta: RequestMeta | undefined): Correlation {
  return { request_id: meta?.requestId ?? null, ip: meta?.ip ?? null, session_id: meta?.sessionId ?? null };
}

export interface ClientRegistry {
  get(clientId: string): Promise<ClientRecord | undefined>;
  invalidate(clientId?: string): void;
}

/** Caches client records; the cache is dropped whenever another process changed the database (see refresh()). */
export class CachedClientRegistry implements ClientRegistry {
  private readonly cache = new Map<string, { rec: ClientRecord | undefined; at: number }>();
  private readonly storage: Storage;
  private readonly ttlMs: number;
  constructor(storage: Storage, ttlMs: number) {
    this.storage = storage;
    this.ttlMs = ttlMs;
  }
  async get(clientId: string): Promise<ClientRecord | undefined> {
    const hit = this.cache.get(clientId);
    const now = Date.now();
    if (hit && now - hit.at < this.ttlMs) return hit.rec;
    const rec = await this.storage.clients.get(clientId);
    // Bound the cache so unknown client ids sent by an attacker cannot grow it without limit.
    if (this.cache.size > 10000) this.cache.clear();
    this.cache.set(clientId, { rec, at: now });
    return rec;
  }
  invalidate(clientId?: string): void {
    if (clientId === undefined) this.cache.clear();
    else this.cache.delete(clientId);
  }
}

export function eventBase(ctx: OAuthContext, meta: RequestMeta | undefined): Pick<SecurityEvent, 'at'> & Correlation {
  return { at: ctx.clock.nowMs(), ...correlation(meta) };
}
