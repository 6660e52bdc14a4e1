import { type FileHandle, mkdir, open } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import type { ExportRecord, SinkConfig } from './export.ts';

/**
 * The transports of the export sinks. send() resolves only once the receiver has acknowledged the whole batch (the
 * exporter then moves the cursor) and rejects otherwise (the exporter retries the same batch later).
 */
export interface ExportTransport {
  send(records: ExportRecord[]): Promise<void>;
  close(): Promise<void>;
}

export function openTransport(cfg: SinkConfig): ExportTransport {
  switch (cfg.type) {
    case 'file':
      return new FileTransport(cfg.path!);
    case 'webhook':
      return new WebhookTransport(cfg);
    case 'syslog':
      return new SyslogTransport(cfg);
  }
}

/** JSON lines appended to a file; acknowledged by fdatasync. */
class FileTransport implements ExportTransport {
  private readonly path: string;
  private handle: FileHandle | undefined;
  constructor(path: string) {
    this.path = path;
  }
  async send(records: ExportRecord[]): Promise<void> {
    try {
      if (!this.handle) {
        await mkdir(dirname(this.path), { recursive: true });
        this.handle = await open(this.path, 'a', 0o600);
      }
      await this.handle.write(`${records.map((r) => r.json).join('\n')}\n`);
      await this.handle.datasync();
    } catch (e) {
      await this.close();
      throw e;
    }
  }
  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }
}

/** One POST per batch: JSON lines (application/x-ndjson) or a JSON array; any 2xx acknowledges the batch. */
class WebhookTransport implements ExportTransport {
  private readonly cfg: SinkConfig;
  constructor(cfg: SinkConfig) {
    this.cfg = cfg;
  }
  async send(records: ExportRecord[]): Promise<void> {
    const array = this.cfg.body === 'json_array';
    const body = array ? `[${records.map((r) => r.json).join(',')}]` : `${records.map((r) => r.json).join('\n')}\n`;
    const res = await fetch(this.cfg.url!, {
      method: 'POST',
      headers: {
        ...this.cfg.headers,
        'content-type': array ? 'application/json' : 'application/x-ndjson',
        'x-portcullis-first-leaf': String(records[0]?.leaf ?? ''),
        'x-portcullis-last-leaf': String(records.at(-1)?.leaf ?? ''),
      },
      body,
      redirect: 'error',
      signal: AbortSignal.timeout(this.cfg.timeout * 1000),
    });
    await res.arrayBuffer().catch(() => undefined);
    if (res.status < 200 || res.status > 299) throw new Error(`webhook answered ${res.status}`);
  }
  async close(): Promise<void> {}
}

/** RFC 5424 §6.2.1: severity from the OCSF severity_id (Informational -> 6 … Critical -> 2). */
const SYSLOG_SEVERITY: Record<number, number> = { 1: 6, 2: 5, 3: 4, 4: 3, 5: 2 };

/** Printable US-ASCII without spaces (RFC 5424 §6: PRINTUSASCII), at most n characters; "-" when empty. */
function headerField(v: string, n: number): string {
  const s = v.replace(/[^\x21-\x7e]/g, '').slice(0, n);
  return s === '' ? '-' : s;
}

/** JSON with every non-ASCII character escaped: the MSG is then plain ASCII (RFC 5424 §6.4 MSG-ANY, no BOM). */
function asciiJson(json: string): string {
  return json.replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * An RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG, where MSGID is the event type and MSG
 * the record's JSON. Framed by octet counting (RFC 6587 §3.4.1: "LEN SP MSG").
 */
export function syslogFrame(
  r: ExportRecord,
  o: { facility: number; appName: string; host: string; procId: string },
): Buffer {
  const pri = o.facility * 8 + (SYSLOG_SEVERITY[r.severity] ?? 6);
  const msg = `<${pri}>1 ${new Date(r.at).toISOString()} ${o.host} ${o.appName} ${o.procId} ${headerField(r.type, 32)} - ${asciiJson(r.json)}`;
  const bytes = Buffer.from(msg, 'utf8');
  return Buffer.concat([Buffer.from(`${bytes.length} `, 'ascii'), bytes]);
}

/**
 * Syslog over TCP (RFC 6587), optionally TLS (RFC 5425 uses the same octet-counting framing). A batch is
 * acknowledged when the socket has accepted all its bytes; the connection is reopened after any error or close.
 * TCP syslog has no application-level acknowledgement: bytes accepted by a receiver that crashes before it
 * processes them are lost to it (docs/audit.md says so; the webhook sink acknowledges per batch).
 */
class SyslogTransport implements ExportTransport {
  private readonly cfg: SinkConfig;
  private socket: Socket | undefined;
  private broken = false;
  private readonly host = headerField(hostname(), 255);
  constructor(cfg: SinkConfig) {
    this.cfg = cfg;
  }

  private connect(): Promise<Socket> {
    if (this.socket && !this.broken) return Promise.resolve(this.socket);
    this.socket?.destroy();
    this.socket = undefined;
    const cfg = this.cfg;
    const tls = cfg.tls;
    return new Promise<Socket>((resolve, reject) => {
      const event = tls ? 'secureConnect' : 'connect';
      const s: Socket = tls
        ? tlsConnect({
            host: cfg.host,
            port: cfg.port,
            servername: tls.servername ?? (/^[\d.:]+$/.test(cfg.host!) ? undefined : cfg.host),
            ...(tls.ca ? { ca: tls.ca } : {}),
            ...(tls.cert ? { cert: tls.cert } : {}),
            ...(tls.key ? { key: tls.key } : {}),
            rejectUnauthorized: tls.reject_unauthorized,
            minVersion: 'TLSv1.2',
          })
        : netConnect({ host: cfg.host!, port: cfg.port! });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`syslog connect to ${cfg.host}:${cfg.port} timed out`));
      }, cfg.timeout * 1000);
      s.once('error', (e) => {
        clearTimeout(timer);
        this.broken = true;
        reject(e);
      });
      s.once(event, () => {
        clearTimeout(timer);
        this.broken = false;
        this.socket = s;
        s.setKeepAlive(true, 10_000);
        s.on('error', () => {
          this.broken = true;
        });
        // The receiver closing its side ends ours too (allowHalfOpen is off): the next batch reconnects.
        s.on('close', () => {
          this.broken = true;
        });
        s.resume(); // a receiver sends nothing; reading keeps its FIN (and so 'close') observable
        resolve(s);
      });
    });
  }

  async send(records: ExportRecord[]): Promise<void> {
    const s = await this.connect();
    const o = {
      facility: this.cfg.facility,
      appName: headerField(this.cfg.app_name, 48),
      host: this.host,
      procId: String(process.pid),
    };
    const buf = Buffer.concat(records.map((r) => syslogFrame(r, o)));
    await new Promise<void>((resolve, reject) => {
      s.write(buf, (err) => (err ? reject(err) : resolve()));
    });
    if (this.broken) throw new Error('the syslog connection closed while sending');
  }

  async close(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.end(() => resolve());
      setTimeout(() => {
        s.destroy();
        resolve();
      }, 1000).unref();
    });
  }
}
