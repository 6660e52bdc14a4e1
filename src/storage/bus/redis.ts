import { Redis } from 'ioredis';
import type { RevocationRecord } from '../ports.ts';
import { type BusChannel, type BusHandlers, parseRevocation } from './bus.ts';

/**
 * Redis pub/sub: each node publishes the revocations it commits on `{prefix}revocations`, and every node
 * subscribes. Pub/sub delivers at most once and only to connected subscribers, so a node reconciles from the
 * table after every (re)subscription (the feed does that on up()). Two connections: a subscribed one can only
 * listen.
 */
export class RedisBus implements BusChannel {
  readonly name = 'redis';
  private readonly sub: Redis;
  private readonly pub: Redis;
  private readonly channel: string;
  private up = false;

  constructor(url: string, opts: { prefix: string }) {
    this.channel = `${opts.prefix}revocations`;
    const options = { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 1, enableOfflineQueue: false };
    this.sub = new Redis(url, { ...options, enableOfflineQueue: true, retryStrategy: (n) => Math.min(n * 100, 2000) });
    this.pub = new Redis(url, { ...options, retryStrategy: (n) => Math.min(n * 100, 2000) });
  }

  start(h: BusHandlers): void {
    const down = (err: unknown) => {
      if (!this.up) return;
      this.up = false;
      h.down(err);
    };
    this.sub.on('error', () => {
      /* reported through close/end; ioredis reconnects */
    });
    this.pub.on('error', () => {});
    this.sub.on('close', () => down(new Error('the Redis subscription closed')));
    this.sub.on('ready', () => {
      this.sub.subscribe(this.channel).then(
        () => {
          if (this.up) return;
          this.up = true;
          h.up();
        },
        (err) => down(err),
      );
    });
    this.sub.on('message', (channel: string, message: string) => {
      if (channel !== this.channel) return;
      let list: unknown;
      try {
        list = JSON.parse(message);
      } catch {
        return;
      }
      for (const item of Array.isArray(list) ? list : [list]) {
        const r = parseRevocation(item);
        if (r) h.revocation(r);
      }
    });
    void this.sub.connect().catch(() => {});
    void this.pub.connect().catch(() => {});
  }

  publish(recs: RevocationRecord[]): void {
    // Best effort: a lost message is made good by the other channel or by the next reconciliation.
    if (this.pub.status !== 'ready') return;
    this.pub.publish(this.channel, JSON.stringify(recs)).catch(() => {});
  }

  async close(): Promise<void> {
    this.up = false;
    this.sub.disconnect();
    this.pub.disconnect();
  }
}
