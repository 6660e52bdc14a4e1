import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Clock } from '../lib/clock.ts';
import type { AuditEventRow, Storage } from '../storage/ports.ts';
import { type ExportTransport, openTransport } from './export-sinks.ts';
import { type OcsfContext, ocsfMapping, toOcsf } from './ocsf.ts';

/**
 * SIEM export (docs/audit.md, Export). Each sink in audit.export_sinks receives every SEALED event, in leaf order,
 * as OCSF records (or `entries` lines). Its cursor (the last leaf index the sink acknowledged) lives in the table
 * audit_export_cursors and moves only after the acknowledgement: a webhook's 2xx, the syslog socket accepting the
 * bytes, the file's fdatasync. A sink that was down gets everything after its cursor when it is back. A crash
 * between the acknowledgement and the cursor's commit re-sends that batch: every record carries its leaf index
 * (and a stable uid), so the reader drops what it already has, and sees each event exactly once, in order.
 *
 * One node at a time per sink: on PostgreSQL a round runs in a transaction holding the sink's advisory lock (a
 * two-key lock, distinct from the sealer's); another node finds it taken and skips the round. SQLite is one node.
 */

let version: string | undefined;
/** Portcullis's version from package.json (metadata.product.version of OCSF records). */
export function productVersion(): string {
  if (version === undefined) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
        version?: string;
      };
      version = pkg.version ?? 'unknown';
    } catch {
      version = 'unknown';
    }
  }
  return version;
}

export type SinkConfig = Config['audit']['export_sinks'][number];
export type ExportFormat = 'ocsf' | 'entries';

/** The `entries` line of a sealed event: what `portcullis audit verify --from-export` reads back. */
export function entryLine(row: AuditEventRow): string {
  return JSON.stringify({
    leaf_index: row.leaf_index,
    event: {
      id: row.id,
      type: row.type,
      at: row.at,
      client_id: row.client_id,
      subject: row.subject,
      jti: row.jti,
      grant_id: row.grant_id,
      session_id: row.session_id,
      ip: row.ip,
      request_id: row.request_id,
      actor: row.actor,
      data: row.data,
    },
  });
}

/** One record ready for a transport: its JSON text (one line), with what syslog needs for its header. */
export interface ExportRecord {
  leaf: number;
  at: number;
  type: string;
  /** OCSF severity_id (1 Informational … 5 Critical). */
  severity: number;
  json: string;
}

export function toRecord(row: AuditEventRow, format: ExportFormat, ctx: OcsfContext): ExportRecord {
  return {
    leaf: row.leaf_index ?? -1,
    at: row.at,
    type: row.type,
    severity: ocsfMapping(row.type).severity,
    json: format === 'entries' ? entryLine(row) : JSON.stringify(toOcsf(row, ctx)),
  };
}

interface SinkState {
  cfg: SinkConfig;
  transport: ExportTransport;
  running: Promise<void> | undefined;
  failures: number;
  /** No attempt before this instant (real time, ms): the backoff after a failure. */
  retryAt: number;
  lastError: string | undefined;
}

/** The first retry waits this long; each further failure doubles it, up to the sink's retry_max. */
const FIRST_RETRY_MS = 250;

export class Exporter {
  private readonly storage: Storage;
  private readonly clock: Clock;
  private readonly log: Logger | undefined;
  private readonly ctx: OcsfContext;
  private readonly sinks: SinkState[];
  private readonly cache = new Map<string, ExportRecord[]>();
  private timer: NodeJS.Timeout | undefined;
  /** stop() has begun: no new rounds start (its own final round aside). */
  private closing = false;
  private stopped = false;

  constructor(storage: Storage, clock: Clock, sinks: readonly SinkConfig[], ctx: OcsfContext, log?: Logger) {
    this.storage = storage;
    this.clock = clock;
    this.ctx = ctx;
    this.log = log;
    this.sinks = sinks.map((cfg) => ({
      cfg,
      transport: openTransport(cfg),
      running: undefined,
      failures: 0,
      retryAt: 0,
      lastError: undefined,
    }));
  }

  /** Runs a round every intervalMs (and whenever kick() is called, e.g. after a checkpoint) until stop(). */
  start(intervalMs: number): void {
    this.timer = setInterval(() => this.kick(), intervalMs);
    this.timer.unref?.();
    this.kick();
  }

  /** Starts a round for every sink that is neither busy nor backing off. */
  kick(): void {
    if (this.closing) return;
    const now = Date.now();
    for (const s of this.sinks) {
      if (s.running || now < s.retryAt) continue;
      s.running = this.drain(s).finally(() => {
        s.running = undefined;
      });
    }
  }

  /** Sends batches until the sink has everything sealed so far, or fails (then backs off). */
  private async drain(s: SinkState): Promise<void> {
    try {
      for (;;) {
        if (this.stopped) return;
        const sent = await this.round(s);
        if (s.failures > 0)
          this.log?.info({ sink: s.cfg.name, after_failures: s.failures }, 'audit export sink is reachable again');
        s.failures = 0;
        s.lastError = undefined;
        if (sent < s.cfg.batch_size) return;
      }
    } catch (e) {
      s.failures++;
      s.lastError = e instanceof Error ? e.message : String(e);
      const delay = Math.min(s.cfg.retry_max * 1000, FIRST_RETRY_MS * 2 ** Math.min(s.failures - 1, 20));
      s.retryAt = Date.now() + delay * (0.75 + Math.random() * 0.5);
      // One warning when the sink goes down, then debug: a long outage does not flood the log.
      const level = s.failures === 1 ? 'warn' : 'debug';
      this.log?.[level](
        { sink: s.cfg.name, err: s.lastError, failures: s.failures, retry_in_ms: Math.round(delay) },
        'audit export to sink failed; retrying with backoff',
      );
    }
  }

  /** One batch: read after the cursor, send, and on acknowledgement move the cursor. Returns the count sent. */
  private async round(s: SinkState): Promise<number> {
    const send = async (tx: Pick<Storage, 'audit' | 'auditExport'>): Promise<number> => {
      const cursor = await tx.auditExport.cursor(s.cfg.name);
      const records = await this.batch(tx, cursor + 1, s.cfg);
      if (records.length === 0) return 0;
      await s.transport.send(records);
      await tx.auditExport.advance(s.cfg.name, records.at(-1)!.leaf, this.clock.nowMs());
      return records.length;
    };
    // SQLite is one node; a transaction held across the network send would block every writer, so none is used.
    if (this.storage.dialect === 'sqlite') return send(this.storage);
    return this.storage.withTransaction(async (tx) => {
      if (!(await tx.auditExport.lockExport(s.cfg.name))) return 0;
      return send(tx);
    });
  }

  /**
   * The records from leaf `from` on. Sinks usually move in step, so a batch read and mapped for one is kept for the
   * next: sealed rows never change, so a cached batch stays a correct (if possibly shorter) batch from that leaf.
   */
  private async batch(tx: Pick<Storage, 'audit'>, from: number, cfg: SinkConfig): Promise<ExportRecord[]> {
    const key = `${cfg.format}:${cfg.batch_size}:${from}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const rows = await tx.audit.sealed(from, cfg.batch_size);
    const records = rows.map((r) => toRecord(r, cfg.format, this.ctx));
    if (records.length) {
      this.cache.set(key, records);
      if (this.cache.size > 8) this.cache.delete(this.cache.keys().next().value as string);
    }
    return records;
  }

  /** Stops the loop; one last round per sink (best effort) sends what the final seal added; closes transports. */
  async stop(): Promise<void> {
    this.closing = true;
    if (this.timer) clearInterval(this.timer);
    await Promise.all(this.sinks.map((s) => s.running));
    for (const s of this.sinks) {
      if (s.failures === 0) {
        s.running = this.drain(s);
        await s.running;
      }
    }
    this.stopped = true;
    await Promise.all(this.sinks.map((s) => s.transport.close().catch(() => undefined)));
  }
}
