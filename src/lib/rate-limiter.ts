import type { Clock } from './clock.ts';

/**
 * One limiter for every throttle in Portcullis (sign-in, second factor, /token, /introspect, the device page).
 *
 * Algorithm: GCRA (the generic cell rate algorithm, a leaky bucket kept as one number per key). A rule allows a
 * burst of `limit` events, then one more every window/limit; a key left alone for `window` is back to a full burst.
 * One number per key means constant memory and constant time per hit, in process or in Redis, whatever the limit.
 * The state is the "theoretical arrival time" (TAT): when the key would be fully drained again.
 */
export interface RateRule {
  /** Names the rule in events, metrics and storage keys: "login_per_ip", "device_session", ... */
  name: string;
  /** Events per window; 0 means no limit. */
  limit: number;
  /** Seconds. */
  window: number;
}

export interface LimitResult {
  allowed: boolean;
  /** Seconds until one more event would be allowed (0 when allowed). */
  retryAfter: number;
}

export interface Limiter {
  /** Counts one event for `key` under `rule`; refused (and not counted) when the key is over the limit. */
  hit(key: string, rule: RateRule): Promise<LimitResult>;
  /** Whether one more event would be allowed now, counting nothing. */
  check(key: string, rule: RateRule): Promise<LimitResult>;
  close(): Promise<void>;
}

const ALLOWED: LimitResult = { allowed: true, retryAfter: 0 };

/** The pure GCRA step: given the stored TAT (ms, 0 for none), the decision and the TAT to store when allowed. */
export function gcra(
  storedTat: number,
  now: number,
  rule: RateRule,
): { allowed: boolean; retryAfterMs: number; tat: number } {
  const windowMs = rule.window * 1000;
  const interval = windowMs / rule.limit;
  const next = Math.max(storedTat, now) + interval;
  if (next - now > windowMs) return { allowed: false, retryAfterMs: next - windowMs - now, tat: storedTat };
  return { allowed: true, retryAfterMs: 0, tat: next };
}

export function toSeconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}

/**
 * In-process counters: right for one node. Bounded: beyond `maxKeys` keys, drained keys are dropped first, then
 * the least recently hit.
 */
export class MemoryLimiter implements Limiter {
  private readonly tats = new Map<string, number>();
  private readonly clock: Clock;
  private readonly maxKeys: number;
  constructor(clock: Clock, maxKeys = 100_000) {
    this.clock = clock;
    this.maxKeys = maxKeys;
  }

  async hit(key: string, rule: RateRule): Promise<LimitResult> {
    return this.hitSync(key, rule);
  }

  async check(key: string, rule: RateRule): Promise<LimitResult> {
    if (rule.limit <= 0) return ALLOWED;
    const id = `${rule.name}\u0000${key}`;
    const r = gcra(this.tats.get(id) ?? 0, this.clock.nowMs(), rule);
    return r.allowed ? ALLOWED : { allowed: false, retryAfter: toSeconds(r.retryAfterMs) };
  }

  /** Synchronous hit, for the Redis limiter's fallback. */
  hitSync(key: string, rule: RateRule): LimitResult {
    if (rule.limit <= 0) return ALLOWED;
    const id = `${rule.name}\u0000${key}`;
    const now = this.clock.nowMs();
    const r = gcra(this.tats.get(id) ?? 0, now, rule);
    if (!r.allowed) return { allowed: false, retryAfter: toSeconds(r.retryAfterMs) };
    // Re-insert so Map order is least recently hit first.
    this.tats.delete(id);
    this.tats.set(id, r.tat);
    if (this.tats.size > this.maxKeys) this.evict(now);
    return ALLOWED;
  }

  private evict(now: number): void {
    for (const [k, tat] of this.tats) if (tat <= now) this.tats.delete(k);
    while (this.tats.size > this.maxKeys) {
      const oldest = this.tats.keys().next().value;
      if (oldest === undefined) break;
      this.tats.delete(oldest);
    }
  }

  async close(): Promise<void> {}
}
