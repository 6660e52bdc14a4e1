import type { SecurityEvent } from '../events/catalogue.ts';
import type { Storage } from './ports.ts';

interface Pending {
  event: SecurityEvent;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Group commit for high-rate events (token.issued): callers await their event's durable write, and every event
 * that arrives in the same turn of the event loop goes into one transaction. One fsync then serves many tokens,
 * so no event is ever skipped to go fast. A caller's token is released only after its promise resolves.
 * Up to maxInFlight batches may be committing at once (the SQLite writer thread queues them; PostgreSQL runs them
 * on separate pooled connections), so the request path never waits for the previous batch's fsync.
 */
export class GroupCommitter {
  private queue: Pending[] = [];
  private inFlight = 0;
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private readonly storage: Storage;
  private readonly maxWaitMs: number;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  batches = 0;
  written = 0;

  constructor(storage: Storage, opts: { maxWaitMs: number; maxBatch?: number; maxInFlight?: number }) {
    this.storage = storage;
    this.maxWaitMs = opts.maxWaitMs;
    this.maxBatch = opts.maxBatch ?? 2000;
    this.maxInFlight = opts.maxInFlight ?? (storage.dialect === 'sqlite' ? 64 : 4);
  }

  write(event: SecurityEvent): Promise<void> {
    if (this.closed) return Promise.reject(new Error('event writer is closed'));
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ event, resolve, reject });
      this.schedule();
    });
  }

  /** maxWaitMs 0 (default) flushes on the next turn of the event loop, adding no timer latency. */
  private schedule(): void {
    if (this.maxWaitMs <= 0 || this.queue.length >= this.maxBatch) {
      this.immediate ??= setImmediate(() => {
        this.immediate = undefined;
        this.flush();
      });
      return;
    }
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, this.maxWaitMs);
  }

  private flush(): void {
    while (this.queue.length && this.inFlight < this.maxInFlight) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      this.storage
        .appendEventsBatch(batch.map((p) => p.event))
        .then(
          () => {
            this.batches++;
            this.written += batch.length;
            for (const p of batch) p.resolve();
          },
          (e) => {
            for (const p of batch) p.reject(e);
          },
        )
        .finally(() => {
          this.inFlight--;
          if (this.queue.length) this.flush();
          else if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
        });
    }
  }

  /** Writes everything queued, then refuses new events. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    this.flush();
    if (this.inFlight > 0 || this.queue.length) await new Promise<void>((r) => this.idleWaiters.push(r));
  }
}
