/**
 * SIEM export, black-box: a real server exports every sealed event to a webhook, a syslog TCP receiver, a syslog
 * TLS receiver and files, while the test takes the receivers down and up again. Whatever the outages, each
 * receiver ends up with every sealed event exactly once by leaf index, in leaf order (dropping the duplicates a
 * retried batch may bring, as the docs tell a reader to). Records are OCSF-shaped; syslog frames are RFC 5424 with
 * RFC 6587 octet counting. `portcullis audit export` writes the same records, or the raw entries, from a cursor.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leafOf, type StoredEventRow } from './helpers/audit.ts';
import { query } from './helpers/db.ts';
import { baseConfig, getToken } from './helpers/oauth.ts';
import {
  createPostgresDatabase,
  freePort,
  makeTempDir,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  randomKek,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';

/** Waits (bounded) for a condition reached in real time by the sealer and the exporter; never a fixed sleep. */
async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A reader's view: the first record of each leaf index, in arrival order (later copies are duplicates). */
function dedupe(leaves: number[]): number[] {
  const seen = new Set<number>();
  return leaves.filter((l) => {
    if (seen.has(l)) return false;
    seen.add(l);
    return true;
  });
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// ---------------------------------------------------------------------------------------------------------------
// Receivers.

/** A webhook receiver whose behaviour the test switches: refuse with 503, accept, or accept but answer too late. */
class Webhook {
  mode: 'unavailable' | 'ok' | 'slow_once' = 'unavailable';
  /** Milliseconds before each 200 (widens the window in which two exporters could overlap). */
  delayMs = 0;
  /** Leaf indices of every record the receiver stored, in arrival order (duplicates included). */
  leaves: number[] = [];
  records: Array<Record<string, unknown>> = [];
  refused = 0;
  slowServed = 0;
  port = 0;
  private server: HttpServer | undefined;

  async listen(port = 0): Promise<void> {
    this.server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (this.mode === 'unavailable') {
          this.refused++;
          res.writeHead(503).end();
          return;
        }
        expect(req.headers['content-type']).toBe('application/x-ndjson');
        for (const line of Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean)) {
          const rec = JSON.parse(line) as Record<string, unknown>;
          this.records.push(rec);
          this.leaves.push(Number((rec.metadata as { sequence: number }).sequence));
        }
        if (this.mode === 'slow_once') {
          // Stored, but the answer comes after the sink's timeout: the exporter must send the batch again.
          this.mode = 'ok';
          this.slowServed++;
          setTimeout(() => res.writeHead(200).end(), 2500);
          return;
        }
        setTimeout(() => res.writeHead(200).end(), this.delayMs);
      });
    });
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
}

/** Splits an RFC 6587 octet-counted stream ("LEN SP MSG" …) into messages; keeps an incomplete tail. */
function takeFrames(buf: Buffer): { frames: string[]; rest: Buffer } {
  const frames: string[] = [];
  let i = 0;
  for (;;) {
    const sp = buf.indexOf(0x20, i);
    if (sp < 0) break;
    const lenText = buf.subarray(i, sp).toString('ascii');
    expect(lenText).toMatch(/^[1-9]\d*$/);
    const len = Number(lenText);
    if (buf.length < sp + 1 + len) break;
    frames.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'));
    i = sp + 1 + len;
  }
  return { frames, rest: buf.subarray(i) };
}

/** RFC 5424 §6: <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA SP MSG. */
const RFC5424 =
  /^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) (-|\[.+?\]) ([\s\S]*)$/;

/** A syslog receiver (TCP or TLS) that parses frames as they come and can go down gracefully and up again. */
class SyslogReceiver {
  leaves: number[] = [];
  messages: Array<{ pri: number; msgid: string; host: string; app: string; record: Record<string, unknown> }> = [];
  connections = 0;
  port = 0;
  private server: NetServer | undefined;
  private sockets = new Set<Socket>();
  private readonly tls: { key: string; cert: string } | undefined;
  constructor(tls?: { key: string; cert: string }) {
    this.tls = tls;
  }

  private onSocket = (s: Socket) => {
    this.connections++;
    this.sockets.add(s);
    let buf: Buffer = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      const { frames, rest } = takeFrames(Buffer.concat([buf, d]));
      buf = rest;
      for (const f of frames) {
        const m = RFC5424.exec(f);
        expect(m, f.slice(0, 200)).not.toBeNull();
        const record = JSON.parse(m![8]!) as Record<string, unknown>;
        this.messages.push({ pri: Number(m![1]), host: m![3]!, app: m![4]!, msgid: m![6]!, record });
        this.leaves.push(Number((record.metadata as { sequence: number }).sequence));
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => this.sockets.delete(s));
  };

  async listen(port = 0): Promise<void> {
    this.server = this.tls ? createTlsServer(this.tls, this.onSocket) : createNetServer(this.onSocket);
    this.server.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }

  /** Stops accepting and half-closes every connection; reads what was already on its way (a graceful shutdown). */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    for (const c of this.sockets) c.end();
    await new Promise((r) => s.close(r));
  }
}

// ---------------------------------------------------------------------------------------------------------------

const openssl = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
if (!openssl) console.warn('\n*** openssl is not installed: the TLS syslog export test is SKIPPED ***\n');

/** A self-signed certificate for localhost / 127.0.0.1 (openssl; node:crypto cannot make X.509 certificates). */
function selfSigned(dir: string, name: string): { key: string; cert: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { stdio: 'ignore' },
  );
  return { key: readFileSync(key, 'utf8'), cert: readFileSync(cert, 'utf8') };
}

let server: RunningServer;
let clients: ReturnType<typeof baseConfig>['clients'];
const dir = makeTempDir('portcullis-export-');
const hook = new Webhook();
const syslog = new SyslogReceiver();
let syslogPort = 0;
let tlsGood: SyslogReceiver | undefined;
let tlsBad: SyslogReceiver | undefined;
const ocsfFile = join(dir, 'siem', 'events.ocsf.jsonl');

type SealedRow = StoredEventRow & { leaf_index: number | string };

const sealed = () => query<SealedRow>(server, 'SELECT * FROM events WHERE leaf_index IS NOT NULL ORDER BY leaf_index');

/** Issues n tokens and waits until their events are sealed; returns the number of sealed events then. */
async function moreEvents(n: number): Promise<number> {
  for (let i = 0; i < n; i++) await getToken(server, clients.svc);
  const total = (await query<{ n: number | string }>(server, 'SELECT COUNT(*) AS n FROM events'))[0]!.n;
  return until('sealing', async () => {
    const s = await sealed();
    return s.length >= Number(total) ? s.length : undefined;
  });
}

/** Waits until the receiver, deduplicated, holds every sealed event; returns that count. */
async function delivered(what: string, leaves: () => number[]): Promise<number> {
  const n = (await sealed()).length;
  await until(`${what}: ${n} sealed events`, () => (dedupe(leaves()).length >= n ? true : undefined));
  return n;
}

beforeAll(async () => {
  await hook.listen();
  syslogPort = await freePort(); // nothing listens yet: the sink starts with its receiver down
  const sinks: Array<Record<string, unknown>> = [
    {
      name: 'siem-hook',
      type: 'webhook',
      url: `http://127.0.0.1:${hook.port}/ingest`,
      batch_size: 7,
      timeout: 1,
      retry_max: 1,
    },
    { name: 'siem-syslog', type: 'syslog', host: '127.0.0.1', port: syslogPort, batch_size: 9, retry_max: 1 },
    { name: 'archive', type: 'file', path: ocsfFile },
  ];
  if (openssl) {
    const good = selfSigned(dir, 'good');
    const other = selfSigned(dir, 'other');
    tlsGood = new SyslogReceiver(good);
    tlsBad = new SyslogReceiver(good);
    await tlsGood.listen();
    await tlsBad.listen();
    sinks.push(
      { name: 'siem-tls', type: 'syslog', host: 'localhost', port: tlsGood.port, tls: { ca: good.cert }, retry_max: 1 },
      // Trusts another CA: the receiver's certificate must be refused and nothing sent.
      {
        name: 'siem-tls-untrusted',
        type: 'syslog',
        host: 'localhost',
        port: tlsBad.port,
        tls: { ca: other.cert },
        retry_max: 1,
      },
    );
  }
  const base = baseConfig();
  clients = base.clients;
  server = await startServer({ ...base.config, audit: { export_sinks: sinks } });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await hook.close();
  await syslog.close();
  await tlsGood?.close();
  await tlsBad?.close();
});

describe('webhook sink', () => {
  it('503 for a while, then connection refused, then up (one answer too late): every sealed event exactly once, in order', async () => {
    await moreEvents(20);
    await until('503 answers', () => (hook.refused >= 2 ? true : undefined));
    expect(hook.leaves).toEqual([]);
    // Now the port refuses connections; more events are sealed meanwhile.
    await hook.close();
    await moreEvents(10);
    // Back, but the first batch is answered after the sink's 1 s timeout: it comes again.
    hook.mode = 'slow_once';
    await hook.listen(hook.port);
    const n = await delivered('webhook', () => hook.leaves);
    expect(hook.slowServed).toBe(1);
    expect(hook.leaves.length).toBeGreaterThan(dedupe(hook.leaves).length); // the retried batch's copies
    expect(dedupe(hook.leaves).slice(0, n)).toEqual(range(n));
    // Each record names its event: the leaf hash as uid, recomputed here from the stored row (RFC 9162 §2.1.1).
    const rows = await sealed();
    for (const rec of hook.records.slice(0, 5)) {
      const meta = rec.metadata as { sequence: number; uid: string };
      const r = rows[meta.sequence]!;
      const leaf = leafOf(r).toString('hex');
      expect(meta.uid).toBe(leaf);
      expect((rec.unmapped as { event_id: number }).event_id).toBe(Number(r.id));
    }
    const cursor = await query<{ last_leaf: number | string }>(
      server,
      "SELECT last_leaf FROM audit_export_cursors WHERE sink = 'siem-hook'",
    );
    expect(Number(cursor[0]?.last_leaf)).toBeGreaterThanOrEqual(n - 1);
  });
});

describe('syslog sink (RFC 5424 over TCP, octet counting)', () => {
  it('receiver down at start, then up, then down and up again: every sealed event exactly once, in order', async () => {
    await moreEvents(5);
    await syslog.listen(syslogPort);
    await delivered('syslog (first time up)', () => syslog.leaves);
    await syslog.close();
    await moreEvents(12);
    await syslog.listen(syslogPort);
    const n = await delivered('syslog (back up)', () => syslog.leaves);
    expect(syslog.connections).toBeGreaterThanOrEqual(2);
    expect(dedupe(syslog.leaves).slice(0, n)).toEqual(range(n));
    const rows = await sealed();
    for (const m of syslog.messages.slice(0, n)) {
      const leaf = Number((m.record.metadata as { sequence: number }).sequence);
      expect(m.msgid).toBe(rows[leaf]!.type);
      expect(m.app).toBe('portcullis');
      expect(m.pri >> 3).toBe(13); // facility log audit
      expect(m.pri & 7).toBe({ 1: 6, 2: 5, 3: 4, 4: 3, 5: 2 }[m.record.severity_id as number]);
      expect(m.record.class_uid).toBeTypeOf('number');
    }
  });
});

describe.skipIf(!openssl)('syslog sink over TLS (self-signed certificate made with openssl)', () => {
  it('delivers every sealed event to the receiver it trusts, and nothing to one whose certificate it does not', async () => {
    await moreEvents(3);
    const n = await delivered('TLS syslog', () => tlsGood!.leaves);
    expect(dedupe(tlsGood!.leaves).slice(0, n)).toEqual(range(n));
    expect(tlsBad!.leaves).toEqual([]);
    const c = await query(server, "SELECT last_leaf FROM audit_export_cursors WHERE sink = 'siem-tls-untrusted'");
    expect(c).toEqual([]);
  });
});

const CLASSES: Record<number, number> = { 3001: 3, 3002: 3, 3003: 3, 3004: 3, 6003: 6 };

function checkOcsf(rec: Record<string, unknown>, leaf: number, row: SealedRow): void {
  const cls = rec.class_uid as number;
  expect(Object.keys(CLASSES).map(Number)).toContain(cls);
  expect(rec.category_uid).toBe(CLASSES[cls]);
  expect(rec.type_uid).toBe(cls * 100 + (rec.activity_id as number));
  expect(rec.time).toBe(Number(row.at));
  expect([1, 2, 3, 4, 5]).toContain(rec.severity_id);
  expect([1, 2]).toContain(rec.status_id);
  const meta = rec.metadata as Record<string, unknown>;
  expect(meta.version).toMatch(/^1\.\d+\.\d+$/);
  expect((meta.product as Record<string, unknown>).name).toBe('Portcullis');
  expect(meta.sequence).toBe(leaf);
  expect(meta.uid).toMatch(/^[0-9a-f]{64}$/);
  expect(meta.event_code).toBe(row.type);
  expect((rec.unmapped as Record<string, unknown>).data).toEqual(JSON.parse(row.data));
  if (row.type === 'token.issued') {
    expect(cls).toBe(6003);
    expect(rec.resources).toEqual([{ uid: row.jti, type: 'access_token' }]);
    expect((rec.actor as { app_uid: string }).app_uid).toBe(row.client_id);
    expect(rec.src_endpoint).toEqual({ ip: '127.0.0.1' });
    expect(rec.http_request).toEqual({ uid: row.request_id });
  }
  if (row.type === 'client.created') expect(cls).toBe(3004);
}

describe('file sink and portcullis audit export', () => {
  it('the file holds OCSF-shaped JSON lines, one per sealed event, in leaf order', async () => {
    const n = await delivered('file', () =>
      readFileSync(ocsfFile, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => Number((JSON.parse(l) as { metadata: { sequence: number } }).metadata.sequence)),
    );
    const rows = await sealed();
    const lines = readFileSync(ocsfFile, 'utf8').split('\n').filter(Boolean).slice(0, n);
    expect(lines.length).toBe(n);
    lines.forEach((l, i) => {
      checkOcsf(JSON.parse(l) as Record<string, unknown>, i, rows[i]!);
    });
    expect(rows.some((r) => r.type === 'token.issued') && rows.some((r) => r.type === 'client.created')).toBe(true);
  });

  it('export --format entries writes the sealed rows exactly; --after resumes; --format ocsf matches the sink', async () => {
    const out = join(server.dir, 'entries.jsonl');
    const r = await server.cli(['audit', 'export', '--format', 'entries', '--out', out]);
    expect(r.code, r.stderr).toBe(0);
    const rows = await sealed();
    const lines = readFileSync(out, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l));
    expect(lines.length).toBe(rows.length);
    lines.forEach((l, i) => {
      const row = rows[i]!;
      expect(l).toEqual({
        leaf_index: i,
        event: {
          id: Number(row.id),
          type: row.type,
          at: Number(row.at),
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
    });
    const after = await server.cli(['audit', 'export', '--format', 'ocsf', '--after', '9']);
    expect(after.code, after.stderr).toBe(0);
    const recs = after.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(recs.length).toBeGreaterThanOrEqual(rows.length - 10);
    recs.forEach((rec, i) => {
      checkOcsf(rec, 10 + i, rows[10 + i]!);
    });
    const fileLine = readFileSync(ocsfFile, 'utf8').split('\n')[10];
    expect(JSON.parse(fileLine!)).toEqual(recs[0]);
    const bad = await server.cli(['audit', 'export', '--format', 'csv']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/ocsf, entries/);
  });
});

const pgAvailable = postgresAvailable('audit-export.test.ts');
(pgAvailable ? describe : describe.skip)(
  `export from two nodes on PostgreSQL${pgAvailable ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`,
  () => {
    let db: TestDatabase;
    let a: RunningServer;
    let b: RunningServer;
    const pgHook = new Webhook();
    const base = baseConfig();
    beforeAll(async () => {
      pgHook.mode = 'ok';
      pgHook.delayMs = 30;
      await pgHook.listen();
      db = await createPostgresDatabase(POSTGRES_URL);
      const config = {
        ...base.config,
        issuer: 'https://auth.example.test',
        audit: {
          export_sinks: [{ name: 'siem', type: 'webhook', url: `http://127.0.0.1:${pgHook.port}/`, batch_size: 5 }],
        },
      };
      const env = { PORTCULLIS_KEK: randomKek() };
      a = await startServer(config, { storageUrl: db.url, env });
      b = await startServer(config, { storageUrl: db.url, env });
    }, 60_000);
    afterAll(async () => {
      await a?.close();
      await b?.close();
      await db?.drop();
      await pgHook.close();
    });

    it('one node at a time sends each batch (advisory lock per sink): every event once, in order, no duplicates', async () => {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => getToken(i % 2 ? a : b, base.clients.svc).then(() => undefined)),
      );
      const count = async () =>
        Number((await query<{ n: number | string }>(a, 'SELECT COUNT(*) AS n FROM events'))[0]!.n);
      const n = await until('sealing on PostgreSQL', async () => {
        const s = await query(a, 'SELECT leaf_index FROM events WHERE leaf_index IS NOT NULL');
        return s.length >= (await count()) ? s.length : undefined;
      });
      await until(`${n} events at the webhook`, () => (pgHook.leaves.length >= n ? true : undefined));
      expect(pgHook.leaves.slice(0, n)).toEqual(range(n));
    });
  },
);
