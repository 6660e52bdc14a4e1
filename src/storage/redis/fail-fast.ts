import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * A Redis connection for state with a local fallback (rate-limit counters, DPoP jtis): commands fail fast rather
 * than queue while Redis is away (the caller falls back), and the outage is logged at most every 10 seconds.
 */
export class FailFastRedis {
  readonly redis: Redis;
  private readonly log: Logger | undefined;
  private readonly outage: string;
  private lastWarn = 0;

  /** `outage`: the log line saying what falls back to what while Redis is unreachable. */
  constructor(url: string, outage: string, log?: Logger | undefined) {
    this.redis = new Redis(url, {
      lazyConnect: false,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: false,
      connectTimeout: 2000,
    });
    this.outage = outage;
    this.log = log;
    this.redis.on('error', (err) => this.warn(err));
  }

  /** Resolves once connected (start-up waits for it, so the first requests use Redis). */
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

  warn(err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarn < 10_000) return;
    this.lastWarn = now;
    this.log?.error({ err }, this.outage);
  }

  close(): void {
    this.redis.disconnect();
  }
}
