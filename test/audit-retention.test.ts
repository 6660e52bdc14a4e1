/**
 * Retention: archive the oldest sealed events to a signed segment file, prune them, and the segment verifies on its
 * own while the database keeps only what is newer (the append-only triggers let nothing else be deleted). On
 * SQLite and, when PORTCULLIS_TEST_POSTGRES_URL is set, PostgreSQL.
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { query, readEvents } from './helpers/db.ts';
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

const pg = postgresAvailable('audit-retention.test.ts (PostgreSQL part)');
const backends = pg ? (['sqlite', 'postgres'] as const) : (['sqlite'] as const);

describe.each(backends)('audit retention (%s)', (backend) => {
  let server: RunningServer;
  let db: TestDatabase | undefined;
  const base = baseConfig();
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-segments-'));

  async function sealedSize(): Promise<number> {
    const r = await server.cli(['audit', 'seal']);
    expect(r.code, r.stderr).toBe(0);
    const m = /tree size (\d+)/.exec(r.stdout);
    return Number(m?.[1]);
  }

  beforeAll(async () => {
    if (backend === 'postgres') db = await createPostgresDatabase(POSTGRES_URL);
    server = await startServer(base.config, db ? { storageUrl: db.url, env: { PORTCULLIS_KEK: randomKek() } } : {});
  });
  afterAll(async () => {
    await server?.close();
    await db?.drop();
  });

  it('archives, prunes, chains a second segment, and each segment verifies with the verifier key', async () => {
    for (let i = 0; i < 4; i++) await getToken(server, base.clients.svc);
    const first = await sealedSize();
    for (let i = 0; i < 3; i++) await getToken(server, base.clients.svc);
    const second = await sealedSize();
    expect(second).toBeGreaterThan(first);
    const key = (await server.cli(['audit', 'key'])).stdout.trim();

    const a = await server.cli(['audit', 'archive', '--dir', dir, '--tree-size', String(first), '--prune']);
    expect(a.code, a.stderr).toBe(0);
    expect(a.stdout).toMatch(new RegExp(`archived leaves 0\\.\\.${first - 1} .*pruned`));
    const left = await query<{ n: number; lo: number }>(
      server,
      'SELECT count(*) AS n, min(leaf_index) AS lo FROM events WHERE leaf_index IS NOT NULL',
    );
    expect(Number(left[0]?.lo)).toBe(first);
    const pruned = await readEvents(server, "WHERE type = 'audit.pruned'");
    expect(pruned.at(-1)?.data).toMatchObject({ from: 0, to: first, deleted: first });

    const b = await server.cli(['audit', 'archive', '--dir', dir, '--tree-size', String(second)]);
    expect(b.code, b.stderr).toBe(0);
    expect(b.stdout).toMatch(new RegExp(`archived leaves ${first}\\.\\.${second - 1} `));

    // What is left in the database still verifies against the signed checkpoints, from the pruned point on.
    const v = await server.cli(['audit', 'verify', '--key', key]);
    expect(v.code, v.stdout + v.stderr).toBe(0);

    const files = readdirSync(dir)
      .filter((f) => f.endsWith('.jsonl'))
      .map((f) => join(dir, f))
      .sort();
    expect(files).toHaveLength(2);
    const ok = await server.cli(['audit', 'verify-segment', ...files, '--key', key]);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout.match(/^ok /gm)).toHaveLength(2);

    // A changed byte in an archived event, or a forged signer, is caught.
    const original = readFileSync(files[0] as string, 'utf8');
    writeFileSync(files[0] as string, original.replace('"token.issued"', '"token.revoked"'));
    const bad = await server.cli(['audit', 'verify-segment', files[0] as string, '--key', key]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/FAIL .*altered after it was signed/);
    writeFileSync(files[0] as string, original);
    const otherKey = key.replace(/\+[0-9a-f]{8}\+/, '+00000000+');
    expect((await server.cli(['audit', 'verify-segment', files[0] as string, '--key', otherKey])).code).not.toBe(0);
  });

  it('the database still refuses to delete events that were not archived and pruned', async () => {
    const sql = 'DELETE FROM events WHERE leaf_index = (SELECT max(leaf_index) FROM events)';
    if (backend === 'sqlite') {
      const Database = (await import('better-sqlite3')).default;
      const h = new Database(String((server.config.storage as { url: string }).url).slice('sqlite:'.length));
      try {
        expect(() => h.prepare(sql).run()).toThrow(/append-only/);
      } finally {
        h.close();
      }
    } else {
      const pgm = (await import('pg')).default;
      const c = new pgm.Client({ connectionString: db?.url });
      await c.connect();
      try {
        await expect(c.query(sql)).rejects.toThrow(/append-only/);
      } finally {
        await c.end();
      }
    }
  });

  it('a forged pruning record (the frontier verification resumes from) fails audit verify', async () => {
    const key = (await server.cli(['audit', 'key'])).stdout.trim();
    const forged = JSON.stringify({ size: 1, hashes: [Buffer.alloc(32, 7).toString('base64')] });
    const set = "UPDATE meta SET value = $1 WHERE key = 'audit_pruned'";
    if (backend === 'sqlite') {
      const Database = (await import('better-sqlite3')).default;
      const h = new Database(String((server.config.storage as { url: string }).url).slice('sqlite:'.length));
      const was = (h.prepare("SELECT value FROM meta WHERE key = 'audit_pruned'").get() as { value: string }).value;
      h.prepare(set.replace('$1', '?')).run(forged);
      h.close();
      const r = await server.cli(['audit', 'verify', '--key', key]);
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/pruning record was altered|missing/);
      const h2 = new Database(String((server.config.storage as { url: string }).url).slice('sqlite:'.length));
      h2.prepare(set.replace('$1', '?')).run(was);
      h2.close();
    } else {
      const pgm = (await import('pg')).default;
      const c = new pgm.Client({ connectionString: db?.url });
      await c.connect();
      const was = (await c.query("SELECT value FROM meta WHERE key = 'audit_pruned'")).rows[0]?.value as string;
      await c.query(set, [forged]);
      const r = await server.cli(['audit', 'verify', '--key', key]);
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toMatch(/pruning record was altered|missing/);
      await c.query(set, [was]);
      await c.end();
    }
    expect((await server.cli(['audit', 'verify', '--key', key])).code).toBe(0);
  });

  it('refuses to archive a range that no longer hashes to its signed root', async () => {
    for (let i = 0; i < 2; i++) await getToken(server, base.clients.svc);
    const size = await sealedSize();
    // A DBA edits an archived-to-be event (after dropping the guard).
    const edit =
      backend === 'sqlite'
        ? async () => {
            const Database = (await import('better-sqlite3')).default;
            const h = new Database(String((server.config.storage as { url: string }).url).slice('sqlite:'.length));
            h.exec('DROP TRIGGER events_no_update');
            h.prepare('UPDATE events SET type = ? WHERE leaf_index = (SELECT max(leaf_index) FROM events)').run(
              'token.revoked',
            );
            h.close();
          }
        : async () => {
            const pgm = (await import('pg')).default;
            const c = new pgm.Client({ connectionString: db?.url });
            await c.connect();
            await c.query('ALTER TABLE events DISABLE TRIGGER USER');
            await c.query(
              "UPDATE events SET type = 'token.revoked' WHERE leaf_index = (SELECT max(leaf_index) FROM events)",
            );
            await c.end();
          };
    await edit();
    const r = await server.cli(['audit', 'archive', '--dir', dir, '--tree-size', String(size)]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/do not hash to the signed root/);
  });
});
