import type { Logger } from 'pino';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { Clock } from '../lib/clock.ts';
import type { BusChannel } from '../storage/bus/bus.ts';
import type { RevocationRecord } from '../storage/ports.ts';
import type { RevocationSet } from './revocation-set.ts';

export interface RevocationFeedOptions {
  set: RevocationSet;
  channels: BusChannel[];
  clock: Clock;
  log: Logger;
  /** Writes revocation.feed_lost / revocation.feed_restored. */
  event: (e: SecurityEvent) => Promise<unknown>;
  /** Keys, clients or users changed on another node. */
  onControl: () => void;
}

/**
 * Keeps a RevocationSet current from the bus and tracks its health. While every channel is connected the set
 * needs no polling (RevocationSet.busLive). When a channel comes (back) up, the set is reconciled from the table:
 * whatever was committed while it was away is read then. While no channel is connected, RevocationSet.feedDownSince
 * says since when; past revocation.max_feed_lag the node is unhealthy (/readyz 503, a gateway refuses every token)
 * and revocation.feed_lost is written once, revocation.feed_restored when a channel is back.
 */
export class RevocationFeed {
  private readonly o: RevocationFeedOptions;
  private readonly up = new Set<string>();
  /** Bumped on every loss, so a reconciliation that finishes after its channel dropped again changes nothing. */
  private readonly generation = new Map<string, number>();
  private lostReported = false;
  /** Events whose write failed (the database may be what is down): written when a channel is back. */
  private pending: SecurityEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private firstUp: Promise<void>;
  private resolveFirstUp: () => void = () => {};

  constructor(o: RevocationFeedOptions) {
    this.o = o;
    this.firstUp = new Promise((r) => {
      this.resolveFirstUp = r;
    });
  }

  /** Starts every channel; resolves when one is up or after waitMs (then the node starts polling). */
  async start(waitMs: number): Promise<void> {
    const { set, clock } = this.o;
    set.busLive = false;
    set.feedDownSince = clock.nowMs();
    for (const ch of this.o.channels) {
      ch.start({
        revocation: (r) => this.receive(r),
        control: () => this.o.onControl(),
        up: () => this.channelUp(ch.name),
        down: (err) => this.channelDown(ch.name, err),
      });
    }
    const check = Math.max(100, Math.min(1000, set.maxFeedLagMs / 4));
    this.timer = setInterval(() => this.checkLag(), check);
    this.timer.unref();
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.firstUp, new Promise((r) => (t = setTimeout(r, waitMs)))]);
    clearTimeout(t);
  }

  /** Revocations this process committed: into the set now, and onto every channel that relays. */
  local(recs: RevocationRecord[]): void {
    for (const r of recs) this.o.set.add(r);
    for (const ch of this.o.channels) ch.publish(recs);
  }

  private receive(r: RevocationRecord | { id: number }): void {
    if ('kind' in r) this.o.set.add(r);
    else void this.o.set.sync(r.id - 1).catch((err) => this.o.log.error({ err }, 'revocation read failed'));
  }

  private channelUp(name: string): void {
    const { set, clock, log } = this.o;
    const gen = this.generation.get(name) ?? 0;
    // Reconcile before declaring the feed healthy again: what was committed while the channel was away is read
    // now; anything committed from here on arrives on the channel (it is already subscribed).
    void set
      .reconcile()
      .then(() => {
        if ((this.generation.get(name) ?? 0) !== gen) return;
        this.up.add(name);
        set.busLive = this.up.size === this.o.channels.length;
        const downSince = set.feedDownSince;
        set.feedDownSince = undefined;
        this.o.onControl();
        this.resolveFirstUp();
        void this.flush();
        log.info({ channel: name }, 'revocation bus connected');
        if (this.lostReported && downSince !== undefined) {
          this.lostReported = false;
          this.write({
            type: 'revocation.feed_restored',
            at: clock.nowMs(),
            actor: 'revocation_feed',
            data: { channel: name, down_ms: clock.nowMs() - downSince },
          });
        }
      })
      .catch((err) => {
        log.warn({ err, channel: name }, 'revocation reconciliation failed; retrying');
        setTimeout(() => {
          if ((this.generation.get(name) ?? 0) === gen) this.channelUp(name);
        }, 500).unref();
      });
  }

  private channelDown(name: string, err: unknown): void {
    const { set, clock, log } = this.o;
    this.generation.set(name, (this.generation.get(name) ?? 0) + 1);
    this.up.delete(name);
    set.busLive = false;
    if (this.up.size === 0 && set.feedDownSince === undefined) set.feedDownSince = clock.nowMs();
    log.warn({ channel: name, err: err instanceof Error ? err.message : String(err) }, 'revocation bus lost');
  }

  private checkLag(): void {
    const { set, clock, log } = this.o;
    const now = clock.nowMs();
    if (this.lostReported || set.healthy(now) || set.feedDownSince === undefined) return;
    this.lostReported = true;
    log.error({ down_ms: now - set.feedDownSince }, 'revocation feed down longer than revocation.max_feed_lag');
    this.write({
      type: 'revocation.feed_lost',
      at: now,
      actor: 'revocation_feed',
      data: {
        down_since: new Date(set.feedDownSince).toISOString(),
        max_feed_lag_ms: set.maxFeedLagMs,
        channels: this.o.channels.map((c) => c.name),
      },
    });
  }

  /** Writes the event, after any that failed before (in order); a failed write is kept for the next try. */
  private write(e: SecurityEvent): void {
    this.pending.push(e);
    void this.flush();
  }

  private flushing = false;

  private async flush(): Promise<void> {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.pending.length) {
        const e = this.pending[0] as SecurityEvent;
        await this.o.event(e);
        this.pending.shift();
      }
    } catch (err) {
      this.o.log.warn({ err }, 'revocation feed event not written yet; retrying when the bus is back');
    } finally {
      this.flushing = false;
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all(this.o.channels.map((c) => c.close()));
  }
}
