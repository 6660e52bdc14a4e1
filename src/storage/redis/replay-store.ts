import type { Logger } from 'pino';
import type { Clock } from '../../lib/clock.ts';
import type { ReplayStore } from '../ports.ts';
import { FailFastRedis } from './fail-fast.ts';

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
  private readonly conn: FailFastRedis;
  private readonly prefix: string;
  private readonly clock: Clock;
  private readonly fallback: Pick<ReplayStore, 'useOnce'>;

  constructor(
    url: string,
    opts: { prefix: string; clock: Clock; fallback: Pick<ReplayStore, 'useOnce'>; log?: Logger | undefined },
  ) {
    this.conn = new FailFastRedis(url, 'Redis unavailable: DPoP replay checks fall back to the database', opts.log);
    this.prefix = `${opts.prefix}once:`;
    this.clock = opts.clock;
    this.fallback = opts.fallback;
  }

  ready(timeoutMs = 5000): Promise<void> {
    return this.conn.ready(timeoutMs);
  }

  async useOnce(key: string, expiresAt: number): Promise<boolean> {
    const ttl = Math.max(1, Math.ceil(expiresAt - this.clock.nowMs()));
    try {
      return (await this.conn.redis.set(`${this.prefix}${key}`, '1', 'PX', ttl, 'NX')) === 'OK';
    } catch (err) {
      this.conn.warn(err);
      return this.fallback.useOnce(key, expiresAt);
    }
  }

  async close(): Promise<void> {
    this.conn.close();
  }
}
