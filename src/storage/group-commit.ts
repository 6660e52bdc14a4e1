import type { SecurityEvent } from '../events/catalogue.ts';
import type { Storage } from './ports.ts';

interface Pending {
  event: SecurityEvent;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit for high-rate events (token.issued): callers await their event's durable write, and every event
 * that arrives while one transaction is committing goes into the next one. One fsync then serves many tokens, so
 * no event is ever skipped to go fast. A caller's token is released only after its promise resolves.
 */
export class GroupCommitter {
  private queue: Pending[] = [];
  private flushing = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly storage: Storage;
  private readonly maxWaitMs: number;
  private readonly maxBatch: number;
  private closed = false;
  batches = 0;
  written = 0;

  constructor(storage: Storage, opts: { maxWaitMs: number; maxBatch?: number }) {
    this.storage = storage;
    this.maxWaitMs = opts.maxWaitMs;
    this.maxBatch = opts.maxBatch ?? 2000;
  }

  write(event: SecurityEvent): Promise<void> {
    if (this.closed) return Promise.reject(new Error('event writer is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ event, resolve, reject });
      if (this.flushing) return;
      if (this.queue.length >= this.maxBatch) this.flushSoon(0);
      else this.flushSoon(this.maxWaitMs);
    });
  }

  private flushSoon(ms: number): void {
    if (this.timer && ms > 0) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  private async flush(): Promise<void> {
    if (this.flushing || this.queue.length === 0) return;
    this.flushing = true;
    const batch = this.queue.splice(0, this.maxBatch);
    try {
      await this.storage.withTransaction((tx) => tx.events.appendMany(batch.map((p) => p.event)));
      this.batches++;
      this.written += batch.length;
      for (const p of batch) p.resolve();
    } catch (e) {
      for (const p of batch) p.reject(e);
    } finally {
      this.flushing = false;
      // Whatever queued while we committed goes out now, as one more transaction.
      if (this.queue.length) void this.flush();
    }
  }

  /** Writes everything queued, then refuses new events. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.queue.length || this.flushing) {
      if (!this.flushing) await this.flush();
      else await new Promise((r) => setTimeout(r, 1));
    }
  }
}
