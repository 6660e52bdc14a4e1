/**
 * Checkpoint sinks outside the database (audit.checkpoint_sinks): the running server's sealer and `audit seal` append
 * every checkpoint to a file sink (one JSON line each) and print it on stdout; a webhook that is down gets the newest
 * checkpoint once it is back, and sealing never waits for it; a broken sink is logged and counted, never fatal.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { query } from './helpers/db.ts';
import { baseConfig, getToken } from './helpers/oauth.ts';
import { freePort, makeTempDir, type RunningServer, startServer } from './helpers/server.ts';

interface SinkRecord {
  origin: string;
  tree_size: number;
  root_hash: string;
  time: number;
  key_id: string;
  note: string;
}

async function dbCheckpoints(server: RunningServer): Promise<Array<{ tree_size: number; note: string }>> {
  const rows = await query<{ tree_size: number | string; note: string }>(
    server,
    'SELECT tree_size, note FROM audit_checkpoints ORDER BY tree_size',
  );
  return rows.map((r) => ({ tree_size: Number(r.tree_size), note: r.note }));
}

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const readSink = (file: string): SinkRecord[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as SinkRecord)
    : [];

describe('audit checkpoint sinks', () => {
  const servers: RunningServer[] = [];
  const receivers: Server[] = [];
  afterAll(async () => {
    for (const r of receivers) r.close();
    for (const s of servers) await s.close();
  });

  it('file and stdout sinks get every checkpoint, from the running sealer and from `audit seal`; verify reads the file', async () => {
    const base = baseConfig();
    const file = join(makeTempDir('portcullis-sink-'), 'checkpoints.jsonl');
    const server = await startServer({
      ...base.config,
      audit: {
        checkpoint_sinks: [{ type: 'file', path: file }, { type: 'stdout' }],
      },
    });
    servers.push(server);
    await getToken(server, base.clients.svc);
    // The server's own sealer (every second) signs one and writes it out.
    await until('a checkpoint in the file sink', () => (readSink(file).length > 0 ? true : undefined));
    await getToken(server, base.clients.svc);
    const sealed = await server.cli(['audit', 'seal']);
    expect(sealed.code, sealed.stderr).toBe(0);
    expect(sealed.stdout).not.toContain('audit_checkpoint'); // stdout sinks are the server's, not the CLI's
    await server.stop(); // the final seal's checkpoint goes out too
    const db = await dbCheckpoints(server);
    const records = readSink(file);
    expect(records.map((r) => r.tree_size)).toEqual(db.map((c) => c.tree_size));
    expect(records.map((r) => r.note)).toEqual(db.map((c) => c.note));
    for (const r of records) expect(r.origin).toMatch(/\/audit$/);
    const printed = server
      .logLines()
      .filter((l) => l.audit_checkpoint !== undefined)
      .map((l) => (l.audit_checkpoint as SinkRecord).tree_size);
    expect(printed.length).toBeGreaterThan(0);
    for (const size of printed) expect(db.map((c) => c.tree_size)).toContain(size);
    const key = (await server.cli(['audit', 'key'])).stdout.trim();
    const v = await server.cli(['audit', 'verify', '--key', key, '--checkpoints', file]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain(`${db.length} external checkpoints`);
  });

  it('a webhook that is down gets the newest checkpoint when it is back; sealing goes on meanwhile', async () => {
    const base = baseConfig();
    const port = await freePort(); // nothing listens yet: connection refused
    const server = await startServer({
      ...base.config,
      audit: {
        checkpoint_sinks: [
          { type: 'webhook', url: `http://127.0.0.1:${port}/checkpoints`, headers: { authorization: 'Bearer sink' } },
        ],
      },
    });
    servers.push(server);
    for (let i = 0; i < 3; i++) await getToken(server, base.clients.svc);
    await until('a failed delivery in the log', () =>
      server.logs().includes('audit checkpoint webhook failed') ? true : undefined,
    );
    // Sealing is not blocked by the sink: more events get sealed and signed while it is down.
    const before = (await dbCheckpoints(server)).at(-1)?.tree_size ?? 0;
    await getToken(server, base.clients.svc);
    await until('a newer checkpoint while the webhook is down', async () =>
      ((await dbCheckpoints(server)).at(-1)?.tree_size ?? 0) > before ? true : undefined,
    );
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_audit_sink_failures_total\{sink="webhook"\} [1-9]/);

    const got: Array<{ body: SinkRecord; req: IncomingMessage }> = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        got.push({ body: JSON.parse(body) as SinkRecord, req });
        res.writeHead(204).end();
      });
    });
    receivers.push(receiver);
    await new Promise<void>((r) => receiver.listen(port, '127.0.0.1', r));
    const newest = (await dbCheckpoints(server)).at(-1) as { tree_size: number; note: string };
    const delivered = await until('the newest checkpoint at the webhook', () =>
      got.find((g) => g.body.tree_size >= newest.tree_size),
    );
    expect(delivered.req.method).toBe('POST');
    expect(delivered.req.url).toBe('/checkpoints');
    expect(delivered.req.headers['content-type']).toBe('application/json');
    expect(delivered.req.headers.authorization).toBe('Bearer sink');
    const db = await dbCheckpoints(server);
    expect(db.find((c) => c.tree_size === delivered.body.tree_size)?.note).toBe(delivered.body.note);
    // After the outage only the newest pending one is sent (checkpoints are cumulative), not the backlog.
    expect(got[0]?.body.tree_size).toBeGreaterThanOrEqual(newest.tree_size);
  });

  it('a file sink that cannot be written is logged and counted; sealing goes on', async () => {
    const base = baseConfig();
    const server = await startServer({
      ...base.config,
      audit: { checkpoint_sinks: [{ type: 'file', path: join(makeTempDir(), 'missing-dir', 'cp.jsonl') }] },
    });
    servers.push(server);
    await getToken(server, base.clients.svc);
    const sealed = await server.cli(['audit', 'seal']);
    expect(sealed.code, sealed.stderr).toBe(0);
    await getToken(server, base.clients.svc);
    await until('the server sealer to log the failure', () =>
      server.logs().includes('audit checkpoint file sink failed') ? true : undefined,
    );
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_audit_sink_failures_total\{sink="file"\} [1-9]/);
    await until('everything sealed', async () => {
      const n = Number(
        (await query<{ n: number }>(server, 'SELECT count(*) AS n FROM events WHERE leaf_index IS NULL'))[0]?.n,
      );
      return n === 0 ? true : undefined;
    });
  });
});
