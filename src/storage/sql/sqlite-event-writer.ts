import { Worker } from 'node:worker_threads';
import type { SecurityEvent } from '../../events/catalogue.ts';

/**
 * Appends event batches to SQLite from a worker thread with its own connection. better-sqlite3 is synchronous, so
 * a commit (and its fsync, synchronous=FULL) on the main thread would stall every request; in the worker the
 * main thread keeps serving while the previous batch reaches the disk, and the next batch grows meanwhile.
 * SQLite serialises writers, so event ids stay monotonic in commit order across both connections.
 */
export class SqliteEventWriter {
  private readonly worker: Worker;
  private seq = 0;
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private failed: Error | undefined;

  constructor(file: string) {
    this.worker = new Worker(new URL('./sqlite-event-writer-worker.ts', import.meta.url), {
      name: 'event-writer',
      workerData: { file },
    });
    this.worker.unref();
    this.worker.on('message', (m: { ids: number[]; error?: string }) => {
      for (const id of m.ids) {
        const w = this.waiting.get(id);
        if (!w) continue;
        this.waiting.delete(id);
        if (m.error) w.reject(new Error(m.error));
        else w.resolve();
      }
    });
    const failAll = (e: Error) => {
      this.failed = e;
      for (const w of this.waiting.values()) w.reject(e);
      this.waiting.clear();
    };
    this.worker.on('error', failAll);
    this.worker.on('exit', (code) => failAll(new Error(`event writer exited (${code})`)));
  }

  appendMany(events: SecurityEvent[]): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const id = ++this.seq;
    return new Promise<void>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      // One flat array of primitives per batch: far cheaper to clone across threads than nested event objects.
      const rows: Array<string | number | null> = [];
      for (const e of events)
        rows.push(
          e.type,
          e.at,
          e.client_id ?? null,
          e.subject ?? null,
          e.jti ?? null,
          e.grant_id ?? null,
          e.request_id ?? null,
          e.actor ?? null,
          e.session_id ?? null,
          e.ip ?? null,
          JSON.stringify(e.data),
        );
      this.worker.postMessage({ id, rows });
    });
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
