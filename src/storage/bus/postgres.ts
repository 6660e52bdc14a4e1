import pg from 'pg';
import type { RevocationRecord } from '../ports.ts';
import { type BusChannel, type BusHandlers, parseRevocation } from './bus.ts';

export const REVOCATION_CHANNEL = 'portcullis_revocation';
export const CONTROL_CHANNEL = 'portcullis_control';
/** Also the heartbeat: re-issuing LISTEN is a no-op that proves the connection still answers. */
const LISTEN_SQL = `LISTEN ${REVOCATION_CHANNEL}; LISTEN ${CONTROL_CHANNEL}`;

/**
 * PostgreSQL LISTEN/NOTIFY on one dedicated connection (outside the pool: a pooled connection would drop the
 * subscription when returned). The NOTIFY comes from a trigger on the revocations table (migration
 * 0008_revocation_notify), so PostgreSQL delivers it when, and only when, the revoking transaction commits. A
 * heartbeat notices a silently dead connection; after a loss it reconnects with a short backoff.
 */
export class PostgresBus implements BusChannel {
  readonly name = 'postgres';
  private readonly url: string;
  private readonly heartbeatMs: number;
  private client: pg.Client | undefined;
  private handlers: BusHandlers | undefined;
  private closed = false;
  private retryMs = 100;
  private retryTimer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;

  constructor(url: string, opts: { heartbeatMs: number }) {
    this.url = url;
    this.heartbeatMs = opts.heartbeatMs;
  }

  start(h: BusHandlers): void {
    this.handlers = h;
    void this.connect();
  }

  publish(_recs: RevocationRecord[]): void {
    // The trigger announces every committed revocation, whoever wrote it.
  }

  private async connect(): Promise<void> {
    if (this.closed || !this.handlers) return;
    const h = this.handlers;
    const c = new pg.Client({
      connectionString: this.url,
      application_name: 'portcullis-bus',
      keepAlive: true,
      connectionTimeoutMillis: 2000,
    });
    let lost = false;
    const onLost = (err: unknown) => {
      if (lost) return;
      lost = true;
      if (this.client === c) this.client = undefined;
      clearInterval(this.heartbeat);
      c.end().catch(() => {});
      if (this.closed) return;
      h.down(err);
      this.retryTimer = setTimeout(() => void this.connect(), this.retryMs);
      this.retryTimer.unref();
      this.retryMs = Math.min(this.retryMs * 2, 2000);
    };
    c.on('error', onLost);
    c.on('end', () => onLost(new Error('the LISTEN connection ended')));
    c.on('notification', (m) => {
      if (m.channel === CONTROL_CHANNEL) return h.control(m.payload ?? '');
      if (m.channel !== REVOCATION_CHANNEL || !m.payload) return;
      let r: ReturnType<typeof parseRevocation>;
      try {
        r = parseRevocation(JSON.parse(m.payload));
      } catch {
        r = undefined;
      }
      if (r) h.revocation(r);
    });
    try {
      await c.connect();
      await c.query(LISTEN_SQL);
    } catch (err) {
      onLost(err);
      return;
    }
    if (this.closed) {
      await c.end().catch(() => {});
      return;
    }
    this.client = c;
    this.retryMs = 100;
    h.up();
    this.heartbeat = setInterval(() => {
      const t = setTimeout(() => onLost(new Error('the LISTEN connection stopped answering')), this.heartbeatMs);
      c.query(LISTEN_SQL).then(
        () => clearTimeout(t),
        (err) => {
          clearTimeout(t);
          onLost(err);
        },
      );
    }, this.heartbeatMs);
    this.heartbeat.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.heartbeat);
    await this.client?.end().catch(() => {});
    this.client = undefined;
  }
}
