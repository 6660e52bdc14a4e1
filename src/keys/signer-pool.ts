import type { KeyObject } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

interface Pending {
  input: string;
  resolve: (token: string) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** kids this worker holds. */
  keys: Set<string>;
  inFlight: Map<number, Pending[]>;
}

/**
 * Signs JWS signing inputs on worker threads. Signing is most of a token's CPU (an ES256 signature costs ~80 µs
 * on a small VM); on the main thread it would cap issuance at one core. Requests signed in the same turn of the
 * event loop travel as one message per worker, so the main thread pays a few microseconds per token instead of
 * WebCrypto's per-call cost. Private keys are handed to a worker once (KeyObjects are cloneable) and never leave
 * the process.
 */
export class SignerPool {
  private readonly slots: Slot[] = [];
  private queue = new Map<string, { alg: string; key: KeyObject; items: Pending[] }>();
  private scheduled = false;
  private batchSeq = 0;
  private next = 0;
  private closed = false;

  constructor(size = Math.max(1, Math.min(4, availableParallelism() - 1))) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./signer-worker.ts', import.meta.url), { name: 'signer' });
    worker.unref();
    const slot: Slot = { worker, keys: new Set(), inFlight: new Map() };
    worker.on('message', (m: { batch: number; sigs: string[] | null }) => {
      const items = slot.inFlight.get(m.batch);
      if (!items) return;
      slot.inFlight.delete(m.batch);
      for (let i = 0; i < items.length; i++) {
        const p = items[i] as Pending;
        const sig = m.sigs?.[i];
        if (sig) p.resolve(`${p.input}.${sig}`);
        else p.reject(new Error('signing key unknown to the signer worker'));
      }
    });
    const fail = (e: Error) => {
      for (const items of slot.inFlight.values()) for (const p of items) p.reject(e);
      slot.inFlight.clear();
      const i = this.slots.indexOf(slot);
      // Replace a dead worker so one crash does not stop issuance for good.
      if (i >= 0 && !this.closed) this.slots[i] = this.spawn();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`signer worker exited (${code})`)));
    return slot;
  }

  /** Resolves to the compact JWS `input.signature`. */
  sign(kid: string, alg: string, key: KeyObject, input: string): Promise<string> {
    if (this.closed) return Promise.reject(new Error('signer pool is closed'));
    return new Promise<string>((resolve, reject) => {
      let q = this.queue.get(kid);
      if (!q) {
        q = { alg, key, items: [] };
        this.queue.set(kid, q);
      }
      q.items.push({ input, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Drops a key from every worker (after rotation retires or revokes it). */
  forget(kid: string): void {
    for (const s of this.slots) if (s.keys.delete(kid)) s.worker.postMessage({ op: 'forget', kid });
  }

  private flush(): void {
    this.scheduled = false;
    const queue = this.queue;
    this.queue = new Map();
    for (const [kid, q] of queue) {
      // Split the tick's work evenly across workers.
      const per = Math.ceil(q.items.length / this.slots.length);
      for (let off = 0; off < q.items.length; off += per) {
        const slot = this.slots[this.next++ % this.slots.length] as Slot;
        const items = q.items.slice(off, off + per);
        if (!slot.keys.has(kid)) {
          slot.worker.postMessage({ op: 'key', kid, alg: q.alg, key: q.key });
          slot.keys.add(kid);
        }
        const batch = ++this.batchSeq;
        slot.inFlight.set(batch, items);
        slot.worker.postMessage({ op: 'sign', batch, kid, inputs: items.map((p) => p.input) });
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map((s) => {
        s.worker.removeAllListeners('exit');
        return s.worker.terminate();
      }),
    );
  }
}
