import { closeSync, fsyncSync, openSync, writeSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { CheckpointRecord } from '../storage/ports.ts';

/**
 * Checkpoint sinks: copies of every signed checkpoint outside the database (docs/audit.md "Checkpoint sinks"). Someone
 * who can rewrite the database can rewrite its events, checkpoints and keys together; a copy they cannot reach still
 * holds the roots they had to change, and `audit verify --checkpoints FILE` compares them.
 *
 * Checkpoints are cumulative (each one's tree contains every earlier one's), so a sink that missed some loses nothing
 * once it has a newer one: the webhook sink sends only the newest pending checkpoint after an outage. A failing sink
 * never blocks or fails sealing: the failure is logged and counted.
 */

export type SinkConfig = Config['audit']['checkpoint_sinks'][number];

/** The record every sink writes: the signed note plus its parsed fields (convenience only; the note is authoritative). */
export function checkpointRecord(origin: string, c: CheckpointRecord) {
  return { origin, tree_size: c.tree_size, root_hash: c.root_hash, time: c.at, key_id: c.key_id, note: c.note };
}

const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 60_000;
const TIMEOUT_MS = 10_000;

class WebhookSink {
  private pending: string | undefined;
  private running: Promise<void> | undefined;
  private readonly url: string;
  private readonly headers: Record<string, string>;
  private readonly onFailure: (e: unknown, attempt: number, retryMs: number) => void;
  private timer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private closed = false;

  constructor(
    url: string,
    headers: Record<string, string>,
    onFailure: (e: unknown, attempt: number, retryMs: number) => void,
  ) {
    this.url = url;
    this.headers = headers;
    this.onFailure = onFailure;
  }

  publish(body: string): void {
    this.pending = body; // a newer checkpoint supersedes an undelivered older one
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
    });
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    while (this.pending !== undefined && !this.closed) {
      const body = this.pending;
      try {
        const r = await fetch(this.url, {
          method: 'POST',
          headers: { ...this.headers, 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        await r.body?.cancel();
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        if (this.pending === body) this.pending = undefined;
        attempt = 0;
      } catch (e) {
        attempt++;
        const wait = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (attempt - 1));
        this.onFailure(e, attempt, wait);
        await new Promise<void>((res) => {
          this.wake = res;
          this.timer = setTimeout(res, wait);
          this.timer.unref?.();
        });
        this.wake = undefined;
      }
    }
  }

  /** Waits until the newest checkpoint is delivered, at most timeoutMs (then gives up; shutdown must not hang). */
  async flush(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.running && Date.now() < deadline) {
      // Retry now rather than after the backoff: this is the last chance before the process exits.
      if (this.timer) clearTimeout(this.timer);
      this.wake?.();
      await Promise.race([this.running, new Promise((r) => setTimeout(r, Math.min(250, deadline - Date.now())))]);
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
  }
}

export class CheckpointSinks {
  /** Failed writes/deliveries per sink type since start (the portcullis_audit_sink_failures_total metric). */
  readonly failures: Record<'file' | 'webhook' | 'stdout', number> = { file: 0, webhook: 0, stdout: 0 };
  private readonly origin: string;
  private readonly log: Logger | undefined;
  private readonly files: string[] = [];
  private readonly webhooks: WebhookSink[] = [];
  private readonly stdout: boolean;

  /** `stdout: false` drops stdout sinks (CLI commands whose standard output is their answer). */
  constructor(configs: readonly SinkConfig[], origin: string, log?: Logger, opts: { stdout?: boolean } = {}) {
    this.origin = origin;
    this.log = log;
    let stdout = false;
    for (const c of configs) {
      if (c.type === 'file') this.files.push(c.path);
      else if (c.type === 'stdout') stdout = opts.stdout !== false;
      else
        this.webhooks.push(
          new WebhookSink(c.url, c.headers ?? {}, (e, attempt, retryMs) => {
            this.failures.webhook++;
            this.log?.warn(
              { err: e, url: c.url, attempt, retry_in_ms: retryMs },
              'audit checkpoint webhook failed; retrying with the newest checkpoint',
            );
          }),
        );
    }
    this.stdout = stdout;
  }

  get size(): number {
    return this.files.length + this.webhooks.length + (this.stdout ? 1 : 0);
  }

  /** Hands a committed checkpoint to every sink; never throws. */
  publish(c: CheckpointRecord): void {
    const rec = checkpointRecord(this.origin, c);
    const line = JSON.stringify(rec);
    for (const path of this.files) {
      try {
        // Append-only, one JSON line per checkpoint (the note's own newlines are escaped, so a line is a record),
        // fsynced before the next: a crash leaves at most one partial last line, which verify reports.
        const fd = openSync(path, 'a', 0o640);
        try {
          writeSync(fd, `${line}\n`);
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
      } catch (e) {
        this.failures.file++;
        this.log?.error({ err: e, path, tree_size: c.tree_size }, 'audit checkpoint file sink failed');
      }
    }
    if (this.stdout) {
      try {
        process.stdout.write(`${JSON.stringify({ audit_checkpoint: rec })}\n`);
      } catch (e) {
        this.failures.stdout++;
        this.log?.error({ err: e }, 'audit checkpoint stdout sink failed');
      }
    }
    for (const w of this.webhooks) w.publish(line);
  }

  /** Gives pending webhook deliveries up to timeoutMs (at shutdown, after the final seal). */
  async flush(timeoutMs: number): Promise<void> {
    await Promise.all(this.webhooks.map((w) => w.flush(timeoutMs)));
  }

  close(): void {
    for (const w of this.webhooks) w.close();
  }
}
