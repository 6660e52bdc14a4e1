/**
 * The audit sealer, checked from outside: events in the database get contiguous leaf indices, and the signed
 * checkpoints are C2SP signed notes whose root is recomputed here independently (plain SHA-256 with the RFC 9162
 * prefixes, not the server's code) from the stored rows, and whose Ed25519 signature verifies with the key that
 * `portcullis audit key` prints. On PostgreSQL, two nodes sealing at once still produce one gap-free tree.
 */
import { createPublicKey, verify } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leafOf, mth, type StoredEventRow } from './helpers/audit.ts';
import { query } from './helpers/db.ts';
import { baseConfig, getToken } from './helpers/oauth.ts';
import {
  createPostgresDatabase,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  randomKek,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';

function verifySignedNote(note: string, verifierKey: string): { size: number; root: string } {
  const m = /^([^+]+)\+([0-9a-f]{8})\+(.+)$/.exec(verifierKey);
  if (!m) throw new Error(`not a verifier key: ${verifierKey}`);
  const [, name, hexId, b64] = m as unknown as [string, string, string, string];
  const keyBytes = Buffer.from(b64, 'base64');
  expect(keyBytes[0]).toBe(1);
  const pub = createPublicKey({
    key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), keyBytes.subarray(1)]),
    format: 'der',
    type: 'spki',
  });
  const split = note.indexOf('\n\n');
  const body = note.slice(0, split + 1);
  const sigLine = note.slice(split + 2).trimEnd();
  expect(sigLine.startsWith(`\u2014 ${name} `)).toBe(true);
  const blob = Buffer.from(sigLine.slice(sigLine.lastIndexOf(' ') + 1), 'base64');
  expect(blob.subarray(0, 4).toString('hex')).toBe(hexId);
  expect(verify(null, Buffer.from(body), pub, blob.subarray(4))).toBe(true);
  const [origin, size, root] = body.split('\n');
  expect(origin).toBe(name);
  return { size: Number(size), root: String(root) };
}

async function checkTree(server: RunningServer, verifierKey: string): Promise<number> {
  const rows = await query<StoredEventRow>(
    server,
    'SELECT * FROM events WHERE leaf_index IS NOT NULL ORDER BY leaf_index',
  );
  for (const [i, r] of rows.entries()) expect(Number(r.leaf_index)).toBe(i);
  const leaves = rows.map(leafOf);
  const cps = await query<{ tree_size: number | string; root_hash: string; note: string }>(
    server,
    'SELECT tree_size, root_hash, note FROM audit_checkpoints ORDER BY tree_size',
  );
  expect(cps.length).toBeGreaterThan(0);
  for (const cp of cps) {
    const signed = verifySignedNote(cp.note, verifierKey);
    expect(signed.size).toBe(Number(cp.tree_size));
    expect(signed.root).toBe(cp.root_hash);
    expect(mth(leaves.slice(0, signed.size)).toString('base64')).toBe(signed.root);
  }
  expect(Number(cps.at(-1)?.tree_size)).toBe(rows.length);
  return rows.length;
}

describe('audit sealing (SQLite)', () => {
  let server: RunningServer;
  const base = baseConfig();
  beforeAll(async () => {
    server = await startServer({ ...base.config, issuer: 'https://auth.example.test/tenant' });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('seals every committed event into a tree whose signed checkpoints verify independently', async () => {
    for (let i = 0; i < 5; i++) await getToken(server, base.clients.svc);
    const sealed = await server.cli(['audit', 'seal']);
    expect(sealed.code, sealed.stderr).toBe(0);
    const key = await server.cli(['audit', 'key']);
    expect(key.code, key.stderr).toBe(0);
    const verifierKey = key.stdout.trim();
    expect(verifierKey).toMatch(/^auth\.example\.test\/tenant\/audit\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*$/);
    const unsealed = await query<{ n: number }>(server, 'SELECT count(*) AS n FROM events WHERE leaf_index IS NULL');
    expect(Number(unsealed[0]?.n)).toBe(0);
    const n = await checkTree(server, verifierKey);
    expect(n).toBeGreaterThanOrEqual(5);
    const created = await query<{ data: string }>(server, "SELECT data FROM events WHERE type = 'audit_key.created'");
    expect(created).toHaveLength(1);
    expect(JSON.parse(created[0]?.data ?? '{}').verifier_key).toBe(verifierKey);

    // More events, another seal: the tree grows, older checkpoints stay valid prefixes.
    for (let i = 0; i < 3; i++) await getToken(server, base.clients.svc);
    expect((await server.cli(['audit', 'seal'])).code).toBe(0);
    expect(await checkTree(server, verifierKey)).toBeGreaterThan(n);
  });

  it('the database refuses to change a sealed leaf index or a checkpoint (defence in depth)', async () => {
    const Database = (await import('better-sqlite3')).default;
    const db = new Database(String((server.config.storage as { url: string }).url).slice('sqlite:'.length));
    try {
      expect(() => db.prepare('UPDATE events SET leaf_index = leaf_index + 1000 WHERE leaf_index = 0').run()).toThrow(
        /sealed event keeps its leaf index/,
      );
      expect(() => db.prepare('DELETE FROM audit_checkpoints').run()).toThrow(/append-only/);
      expect(() => db.prepare("UPDATE events SET ip = '10.0.0.1' WHERE leaf_index = 0").run()).toThrow(/append-only/);
    } finally {
      db.close();
    }
  });

  it('a clean shutdown seals what is committed; a restart keeps extending the same tree', async () => {
    await getToken(server, base.clients.svc);
    await server.restart();
    await getToken(server, base.clients.svc);
    expect((await server.cli(['audit', 'seal'])).code).toBe(0);
    const key = (await server.cli(['audit', 'key'])).stdout.trim();
    const stopped = await query<{ leaf_index: number | null }>(
      server,
      "SELECT leaf_index FROM events WHERE type = 'server.stopped'",
    );
    expect(stopped.length).toBeGreaterThan(0);
    for (const s of stopped) expect(s.leaf_index).not.toBeNull();
    await checkTree(server, key);
  });
});

const pgAvailable = postgresAvailable('audit-sealing.test.ts');
(pgAvailable ? describe : describe.skip)(
  `audit sealing, two nodes on PostgreSQL${pgAvailable ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`,
  () => {
    let db: TestDatabase;
    let a: RunningServer;
    let b: RunningServer;
    const base = baseConfig();
    beforeAll(async () => {
      db = await createPostgresDatabase(POSTGRES_URL);
      const config = { ...base.config, issuer: 'https://auth.example.test' };
      const env = { PORTCULLIS_KEK: randomKek() };
      a = await startServer(config, { storageUrl: db.url, env });
      b = await startServer(config, { storageUrl: db.url, env });
    });
    afterAll(async () => {
      await a?.close();
      await b?.close();
      await db?.drop();
    });

    it('both nodes seal concurrently into one gap-free tree under one audit key', async () => {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) => getToken(i % 2 ? a : b, base.clients.svc, {}).then(() => undefined)),
      );
      const seals = await Promise.all([a.cli(['audit', 'seal']), b.cli(['audit', 'seal']), a.cli(['audit', 'seal'])]);
      for (const s of seals) expect(s.code, s.stderr).toBe(0);
      expect((await a.cli(['audit', 'seal'])).code).toBe(0);
      const keys = (await a.cli(['audit', 'key'])).stdout.trim().split('\n');
      expect(keys).toHaveLength(1);
      const n = await checkTree(a, keys[0] as string);
      expect(n).toBeGreaterThanOrEqual(40);
    });
  },
);
