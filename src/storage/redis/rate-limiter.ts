import type { Logger } from 'pino';
import type { Clock } from '../../lib/clock.ts';
import { type Limiter, type LimitResult, MemoryLimiter, type RateRule, toSeconds } from '../../lib/rate-limiter.ts';
import { FailFastRedis } from './fail-fast.ts';

/**
 * The GCRA step of lib/rate-limiter.ts, run atomically inside Redis so every node shares one counter per key.
 * The time comes from the caller's clock (ARGV[1]), not Redis's, so all nodes and the tests' fake clock agree.
 * KEYS[1] = counter; ARGV = now ms, window ms, limit, record (1 = count the event when allowed).
 * Returns {1, 0} when allowed, {0, retry-after ms} when refused.
 */
const GCRA_SCRIPT = `
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local interval = window / tonumber(ARGV[3])
if tat < now then tat = now end
local nxt = tat + interval
if nxt - now > window then return {0, math.ceil(nxt - window - now)} end
if ARGV[4] == '1' then redis.call('SET', KEYS[1], string.format('%.3f', nxt), 'PX', math.ceil(nxt - now)) end
return {1, 0}
`;

const ALLOWED: LimitResult = { allowed: true, retryAfter: 0 };

/**
 * Counters in Redis, shared by every node that points at the same Redis and key prefix. If Redis cannot be
 * reached, each call falls back to this node's own in-memory counters (logged): throttling weakens to per-node
 * limits for the outage, it never switches off.
 */
export class RedisLimiter implements Limiter {
  private readonly conn: FailFastRedis;
  private readonly prefix: string;
  private readonly clock: Clock;
  private readonly fallback: MemoryLimiter;
  constructor(url: string, opts: { prefix: string; clock: Clock; log?: Logger }) {
    this.conn = new FailFastRedis(url, 'Redis unavailable: rate limits fall back to this node', opts.log);
    this.prefix = `${opts.prefix}rl:`;
    this.clock = opts.clock;
    this.fallback = new MemoryLimiter(opts.clock);
  }

  ready(timeoutMs = 5000): Promise<void> {
    return this.conn.ready(timeoutMs);
  }

  hit(key: string, rule: RateRule): Promise<LimitResult> {
    return this.run(key, rule, true);
  }

  check(key: string, rule: RateRule): Promise<LimitResult> {
    return this.run(key, rule, false);
  }

  private async run(key: string, rule: RateRule, record: boolean): Promise<LimitResult> {
    if (rule.limit <= 0) return ALLOWED;
    try {
      const [ok, retryMs] = (await this.conn.redis.eval(
        GCRA_SCRIPT,
        1,
        `${this.prefix}${rule.name}:${key}`,
        String(this.clock.nowMs()),
        String(rule.window * 1000),
        String(rule.limit),
        record ? '1' : '0',
      )) as [number, number];
      return ok === 1 ? ALLOWED : { allowed: false, retryAfter: toSeconds(retryMs) };
    } catch (err) {
      this.conn.warn(err);
      return record ? this.fallback.hitSync(key, rule) : this.fallback.check(key, rule);
    }
  }

  async close(): Promise<void> {
    this.conn.close();
  }
}
