import type { Clock } from './clock.ts';

/**
 * Counts failures per key in a sliding window and says when a key has had too many. In memory, per process: it
 * throttles guessing at one node; a cluster of N nodes behind a load balancer allows at most N times the limit,
 * which stays far below what guessing a short-lived secret from a large space would need. Bounded: when more than
 * `maxKeys` keys are tracked, the least recently failed are forgotten.
 */
export class FailureWindow {
  private readonly failures = new Map<string, number[]>();
  private readonly clock: Clock;
  private readonly windowMs: number;
  private readonly maxKeys: number;
  constructor(clock: Clock, windowSeconds: number, maxKeys = 50_000) {
    this.clock = clock;
    this.windowMs = windowSeconds * 1000;
    this.maxKeys = maxKeys;
  }

  /** Failures of `key` within the window. */
  count(key: string): number {
    return this.live(key).length;
  }

  /** Records one failure; returns the count within the window, this one included. */
  record(key: string): number {
    const list = this.live(key);
    list.push(this.clock.nowMs());
    // Re-insert so Map order is least recently failed first.
    this.failures.delete(key);
    this.failures.set(key, list);
    while (this.failures.size > this.maxKeys) {
      const oldest = this.failures.keys().next().value;
      if (oldest === undefined) break;
      this.failures.delete(oldest);
    }
    return list.length;
  }

  /** Seconds until the oldest failure of `key` leaves the window (0 when there is none). */
  retryAfter(key: string): number {
    const list = this.live(key);
    if (list.length === 0) return 0;
    return Math.max(1, Math.ceil((list[0]! + this.windowMs - this.clock.nowMs()) / 1000));
  }

  private live(key: string): number[] {
    const list = this.failures.get(key);
    if (!list) return [];
    const from = this.clock.nowMs() - this.windowMs;
    let i = 0;
    while (i < list.length && list[i]! <= from) i++;
    if (i > 0) list.splice(0, i);
    if (list.length === 0) this.failures.delete(key);
    return list;
  }
}
