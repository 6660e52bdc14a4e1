import type { Clock } from '../lib/clock.ts';

/**
 * Counts failures per key in a fixed window, in this process's memory. Enough for one node; the account-protection
 * issue moves counters to Redis for clusters. Bounded: the map is cleared if an attacker floods it with keys.
 */
export class FailureWindow {
  private readonly counts = new Map<string, { n: number; until: number }>();
  private readonly limit: number;
  private readonly windowMs: number;
  private readonly clock: Clock;
  constructor(limit: number, windowMs: number, clock: Clock) {
    this.limit = limit;
    this.windowMs = windowMs;
    this.clock = clock;
  }

  /** Seconds until the key may try again, or 0 when it may try now. */
  blockedFor(key: string): number {
    const e = this.counts.get(key);
    const now = this.clock.nowMs();
    if (!e || e.until <= now) return 0;
    return e.n >= this.limit ? Math.ceil((e.until - now) / 1000) : 0;
  }

  fail(key: string): void {
    const now = this.clock.nowMs();
    if (this.counts.size > 100_000) this.counts.clear();
    const e = this.counts.get(key);
    if (!e || e.until <= now) this.counts.set(key, { n: 1, until: now + this.windowMs });
    else e.n++;
  }
}
