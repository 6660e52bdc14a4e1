import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Clock } from '../../lib/clock.ts';
import type { ReplayStore } from '../ports.ts';

/**
 * One-time values (DPoP proof jtis) in Redis, shared by every node that points at the same Redis and key prefix:
 * `SET key 1 NX PX ttl` is the whole check, atomic in Redis, one round trip and no database write per proof. The
 * time to live is computed from the caller's clock (not Redis's), so every node and the tests' fake clock agree.
 *
 * If Redis cannot be reached, each call falls back to the database's replay table (logged), which every node shares
 * too: the check never switches off. The one gap: a proof first used through Redis and replayed during the outage,
 * within its iat window (dpop.iat_window), is not recognised by the table.
 */
export class RedisReplayStore implements Pick<ReplayStore, 'useOnce'> {
  private readonly redis: Redis;
  private readonly prefix: string;
  private readonly clock: Clock;
  private readonly fallback: Pick<ReplayStore, 'useOnce'>;
  private readonly log: Logger | undefined;
  private lastWarn = 0;

  constructor(
    url: string,
    opts: { prefix: string; clock: Clock; fallback: Pick<ReplayStore, 'useOnce'>; log?: Logger | undefined },
  ) {
    this.redis = new Redis(url, {
      lazyConnect: false,
      // Fail fast rather than queue: the fallback answers while Redis is away.
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectTimeout: 2000,
    });
    this.redis.on('error', (err) => this.warn(err));
    this.prefix = `${opts.prefix}once:`;
    this.clock = opts.clock;
    this.fallback = opts.fallback;
    this.log = opts.log;
  }

  /** Resolves once connected (start-up waits for it, so the first proofs are recorded in Redis). */
  async ready(timeoutMs = 5000): Promise<void> {
    if (this.redis.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('redis.url: Redis did not answer within 5 s')), timeoutMs);
      this.redis.once('ready', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  async useOnce(key: string, expiresAt: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(expiresAt - this.clock.nowMs()));
    try {
      return (await this.redis.set(`${this.prefix}${key}`, '1', 'PX', ttl, 'NX')) === 'OK';
    } catch (err) {
      this.warn(err);
      return this.fallback.useOnce(key, expiresAt);
    }
  }

  private warn(err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarn < 10_000) return;
    this.lastWarn = now;
    this.log?.error({ err }, 'Redis unavailable: DPoP replay checks fall back to the database');
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
