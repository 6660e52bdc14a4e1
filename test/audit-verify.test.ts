/**
 * `portcullis audit verify` against a tampered database. A real server writes and seals a log (with a file checkpoint
 * sink), stops, and then each test works on a copy of its database as a DBA with full access would: drops the
 * append-only triggers, edits rows with plain SQL, and when the attack calls for it recomputes leaf hashes, the tree,
 * the frontier and re-signs checkpoints with a key of its own (the attacker's tooling below reuses the public
 * algorithms: entry encoding, RFC 9162 hashing, signed notes). Each attack must make verify exit non-zero and name the
 * entry (leaf index / event id) or checkpoint; the whole-rewrite and truncation attacks are caught only by a pinned key
 * or the external checkpoint copy, and the tests show that too. On SQLite and on PostgreSQL.
 */
import { copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { eventLeafHash } from '../src/audit/entry.ts';
import { Frontier } from '../src/audit/merkle.ts';
import { generateAuditKeyPem, keyId, privateKeyFromPem, signCheckpoint } from '../src/audit/note.ts';
import type { AuditEventRow } from '../src/storage/ports.ts';
import { dbaSql } from './helpers/db.ts';
import { baseConfig, getToken } from './helpers/oauth.ts';
import {
  type CliResult,
  createPostgresDatabase,
  makeTempDir,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  runPortcullis,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';

type Kind = 'sqlite' | 'postgres';
type Q = (sql: string, params?: unknown[]) => Promise<Record<string, unknown>[]>;

interface Problem {
  kind: string;
  message: string;
  leaf_index?: number;
  event_id?: number;
  checkpoint?: number;
  source?: string;
}
interface Report {
  ok: boolean;
  entries: number;
  checkpoints: number;
  external_checkpoints: number;
  problems: Problem[];
}

const ORIGIN = 'auth.example.test/audit';

function toRow(r: Record<string, unknown>): AuditEventRow {
  const n = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  return {
    id: Number(r.id),
    type: String(r.type),
    at: Number(r.at),
    client_id: r.client_id as string | null,
    subject: r.subject as string | null,
    jti: r.jti as string | null,
    grant_id: r.grant_id as string | null,
    session_id: r.session_id as string | null,
    ip: r.ip as string | null,
    request_id: r.request_id as string | null,
    actor: r.actor as string | null,
    data: String(r.data),
    leaf_index: n(r.leaf_index),
    leaf_hash: r.leaf_hash as string | null,
  };
}

async function dropTriggers(kind: Kind, q: Q): Promise<void> {
  const stmts =
    kind === 'sqlite'
      ? [
          'events_no_update',
          'events_no_delete',
          'events_no_update_correlation',
          'events_leaf_once',
          'events_leaf_hash_once',
          'audit_checkpoints_no_update',
          'audit_checkpoints_no_delete',
        ].map((t) => `DROP TRIGGER IF EXISTS ${t}`)
      : [
          'DROP TRIGGER IF EXISTS events_append_only ON events',
          'DROP TRIGGER IF EXISTS events_prune_only ON events',
          'DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints',
        ];
  for (const s of stmts) await q(s);
}

async function rowAt(q: Q, leaf: number): Promise<AuditEventRow> {
  const r = (await q('SELECT * FROM events WHERE leaf_index = $1', [leaf]))[0];
  if (!r) throw new Error(`no leaf ${leaf}`);
  return toRow(r);
}

/**
 * The attacker's rewrite: recomputes every leaf hash from the (edited) rows, the frontier, and, given a key, every
 * checkpoint's root and signature, replacing the audit keys by that key.
 */
async function rewriteTree(q: Q, resign?: { privatePem: string; raw: Buffer }): Promise<void> {
  const rows = (await q('SELECT * FROM events WHERE leaf_index IS NOT NULL ORDER BY leaf_index')).map(toRow);
  const cps = (await q('SELECT tree_size, at FROM audit_checkpoints ORDER BY tree_size')).map((c) => ({
    size: Number(c.tree_size),
    at: Number(c.at),
  }));
  const f = new Frontier();
  const sign = async () => {
    if (!resign) return;
    for (const c of cps.filter((x) => x.size === f.size)) {
      const note = signCheckpoint(
        { origin: ORIGIN, size: f.size, root: f.root(), time: c.at },
        ORIGIN,
        privateKeyFromPem(resign.privatePem),
      );
      await q('UPDATE audit_checkpoints SET root_hash = $1, note = $2, key_id = $3 WHERE tree_size = $4', [
        f.root().toString('base64'),
        note,
        keyId(ORIGIN, resign.raw).toString('hex'),
        c.size,
      ]);
    }
  };
  for (const r of rows) {
    const h = eventLeafHash(r);
    if (h.toString('base64') !== r.leaf_hash)
      await q('UPDATE events SET leaf_hash = $1 WHERE id = $2', [h.toString('base64'), r.id]);
    f.append(h);
    await sign();
  }
  await q("UPDATE meta SET value = $1 WHERE key = 'audit_frontier'", [JSON.stringify(f.toJSON())]);
  if (resign) {
    const id = keyId(ORIGIN, resign.raw).toString('hex');
    await q('DELETE FROM audit_keys');
    await q(
      'INSERT INTO audit_keys (key_id, name, public_key, private_key, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, NULL)',
      [id, ORIGIN, resign.raw.toString('base64'), 'attacker', 1],
    );
  }
}

function tamperSuite(kind: Kind) {
  let server: RunningServer;
  let pgDb: TestDatabase | undefined;
  let sinkFile: string;
  let key: string;
  let cps: number[];
  let total: number;
  const clones: string[] = [];

  beforeAll(async () => {
    const base = baseConfig();
    sinkFile = join(makeTempDir('portcullis-sink-'), 'checkpoints.jsonl');
    if (kind === 'postgres') pgDb = await createPostgresDatabase(POSTGRES_URL);
    server = await startServer(
      {
        ...base.config,
        issuer: 'https://auth.example.test',
        audit: { checkpoint_sinks: [{ type: 'file', path: sinkFile }] },
      },
      pgDb ? { storageUrl: pgDb.url } : {},
    );
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 3; i++) await getToken(server, base.clients.svc);
      const s = await server.cli(['audit', 'seal']);
      expect(s.code, s.stderr).toBe(0);
    }
    await server.stop(); // the final seal covers server.stopped
    key = (await server.cli(['audit', 'key'])).stdout.trim();
    await dbaSql(String((server.config.storage as { url: string }).url), async (q) => {
      cps = (await q('SELECT tree_size FROM audit_checkpoints ORDER BY tree_size')).map((r) => Number(r.tree_size));
      total = Number((await q('SELECT count(*) AS n FROM events WHERE leaf_index IS NOT NULL'))[0]?.n);
    });
    expect(cps.length).toBeGreaterThanOrEqual(4);
    expect(total).toBeGreaterThan(12);
  }, 60_000);

  afterAll(async () => {
    const admin = kind === 'postgres' ? new pg.Client({ connectionString: POSTGRES_URL }) : undefined;
    if (admin) {
      await admin.connect();
      for (const name of clones) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    }
    await server?.close();
    await pgDb?.drop();
  });

  /** A copy of the sealed log's database, tampered by `tamper`; verify runs against it. */
  async function attack(tamper: (q: Q) => Promise<void>) {
    const dir = makeTempDir('portcullis-tamper-');
    const src = String((server.config.storage as { url: string }).url);
    let url: string;
    if (kind === 'sqlite') {
      const file = src.slice('sqlite:'.length);
      copyFileSync(file, join(dir, 'copy.db'));
      if (existsSync(`${file}-wal`)) copyFileSync(`${file}-wal`, join(dir, 'copy.db-wal'));
      url = `sqlite:${join(dir, 'copy.db')}`;
    } else {
      const name = `${pgDb?.name}_c${clones.length}`;
      clones.push(name);
      const admin = new pg.Client({ connectionString: POSTGRES_URL });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${name} TEMPLATE ${pgDb?.name}`);
      await admin.end();
      const u = new URL(pgDb?.url as string);
      u.pathname = `/${name}`;
      url = u.toString();
    }
    await dbaSql(url, async (q) => {
      await dropTriggers(kind, q);
      await tamper(q);
    });
    const configPath = join(dir, 'portcullis.yaml');
    // No sinks on the copy: sealing it must not write into the original's external checkpoint file.
    writeFileSync(configPath, toYaml({ ...server.config, storage: { url }, audit: { checkpoint_sinks: [] } }));
    const run = (args: string[]): Promise<CliResult> =>
      runPortcullis([...args, '--config', configPath], { cwd: dir, env: server.env, timeoutMs: 60_000 });
    const verify = async (args: string[] = []): Promise<{ res: CliResult; report: Report }> => {
      const res = await run(['audit', 'verify', '--json', ...args]);
      let report: Report;
      try {
        report = JSON.parse(res.stdout) as Report;
      } catch {
        throw new Error(`audit verify printed no JSON report (exit ${res.code}): ${res.stdout}${res.stderr}`);
      }
      expect(res.code, res.stdout).toBe(report.ok ? 0 : 1);
      return { res, report };
    };
    return { run, verify, url };
  }

  const firstCpAbove = (leaf: number) => cps.find((s) => s > leaf) as number;

  it('a clean log verifies: exit 0, every checkpoint and the external copy match', async () => {
    const { run, verify } = await attack(async () => {});
    const { report } = await verify(['--key', key, '--checkpoints', sinkFile]);
    expect(report.problems).toEqual([]);
    expect(report.entries).toBe(total);
    expect(report.checkpoints).toBe(cps.length);
    expect(report.external_checkpoints).toBe(cps.length);
    const plain = await run(['audit', 'verify']);
    expect(plain.code, plain.stdout).toBe(0);
    expect(plain.stdout).toMatch(/^audit verify: OK: \d+ entries/);
    expect(plain.stderr).toMatch(/no --key given: .*stored in the database/);
  });

  it('an export file (entries format) verifies against the checkpoints; an edited line fails its checkpoint', async () => {
    const { verify } = await attack(async () => {});
    const rows = (
      await (async () => {
        let out: Record<string, unknown>[] = [];
        await dbaSql(String((server.config.storage as { url: string }).url), async (q) => {
          out = await q('SELECT * FROM events WHERE leaf_index IS NOT NULL ORDER BY leaf_index');
        });
        return out;
      })()
    ).map(toRow);
    const line = (r: AuditEventRow) => {
      const { leaf_index, leaf_hash: _h, ...event } = r;
      return JSON.stringify({ leaf_index, event });
    };
    const file = join(makeTempDir('portcullis-export-'), 'entries.jsonl');
    writeFileSync(file, `${rows.map(line).join('\n')}\n`);
    const ok = await verify(['--key', key, '--from-export', file]);
    expect(ok.report.problems).toEqual([]);
    expect(ok.report.entries).toBe(total);
    const edited = rows.map((r) => (r.leaf_index === 3 ? { ...r, data: '{"scope":"admin"}' } : r));
    writeFileSync(file, `${edited.map(line).join('\n')}\n`);
    const bad = await verify(['--key', key, '--from-export', file]);
    expect(bad.report.problems[0]).toMatchObject({ kind: 'checkpoint_root', checkpoint: firstCpAbove(3) });
  });

  it('a modified column (data, type, client_id, at) names the exact entry', async () => {
    const ids: number[] = [];
    const { verify, run } = await attack(async (q) => {
      for (const [leaf, set] of [
        [3, `data = '{"scope":"admin"}'`],
        [5, "type = 'token.revoked'"],
        [7, "client_id = 'someone-else'"],
        [9, 'at = at - 1000'],
      ] as const) {
        ids.push((await rowAt(q, leaf)).id);
        await q(`UPDATE events SET ${set} WHERE leaf_index = ${leaf}`);
      }
    });
    const { report } = await verify(['--key', key]);
    expect(report.problems[0]).toMatchObject({ kind: 'entry_modified', leaf_index: 3, event_id: ids[0] });
    const modified = report.problems.filter((p) => p.kind === 'entry_modified');
    expect(modified.map((p) => [p.leaf_index, p.event_id])).toEqual([
      [3, ids[0]],
      [5, ids[1]],
      [7, ids[2]],
      [9, ids[3]],
    ]);
    const human = await run(['audit', 'verify', '--key', key]);
    expect(human.code).toBe(1);
    expect(human.stdout).toContain(`first: leaf 3 (event ${ids[0]}`);
  });

  it('a modified entry whose leaf hash was rewritten too: the first failing checkpoint bounds it', async () => {
    const { verify } = await attack(async (q) => {
      await q(`UPDATE events SET data = '{"scope":"admin"}' WHERE leaf_index = 3`);
      await rewriteTree(q); // leaf hashes and frontier, but the attacker cannot sign
    });
    const { report } = await verify(['--key', key]);
    const first = report.problems[0] as Problem;
    expect(first).toMatchObject({ kind: 'checkpoint_root', checkpoint: firstCpAbove(3) });
    const from = Number(/among leaves (\d+)\.\.(\d+)/.exec(first.message)?.[1]);
    expect(from).toBeLessThanOrEqual(3);
    expect(first.message).toContain(`..${firstCpAbove(3) - 1}`);
  });

  it('a deleted event is named by its leaf index', async () => {
    let next = 0;
    const { verify } = await attack(async (q) => {
      next = (await rowAt(q, 5)).id;
      await q('DELETE FROM events WHERE leaf_index = 4');
    });
    const { report } = await verify(['--key', key]);
    expect(report.problems[0]).toMatchObject({ kind: 'leaf_missing', leaf_index: 4, event_id: next });
    expect(report.problems[0]?.message).toMatch(/^leaf 4 is missing/);
  });

  it('an inserted, backdated unsealed event is named; once sealed it is named as sealed late', async () => {
    let id = 0;
    const { verify, run } = await attack(async (q) => {
      const at = (await rowAt(q, 2)).at - 3_600_000;
      await q(
        `INSERT INTO events (type, at, client_id, actor, data) VALUES ('token.revoked', ${at}, 'svc', 'dba', '{}')`,
      );
      id = Number((await q('SELECT max(id) AS id FROM events'))[0]?.id);
    });
    const { report } = await verify(['--key', key]);
    expect(report.problems[0]).toMatchObject({ kind: 'unsealed_old', event_id: id });
    // A sealer then picks it up (as a running server would within a second): now it is a leaf, still caught.
    const sealed = await run(['audit', 'seal']);
    expect(sealed.code, sealed.stderr).toBe(0);
    const after = await verify(['--key', key]);
    expect(after.report.problems[0]).toMatchObject({ kind: 'sealed_late', event_id: id, leaf_index: total });
    // A recent unsealed event is only pending (the sealer has not run yet): not a failure.
    const { verify: v2 } = await attack(async (q) => {
      await q(`INSERT INTO events (type, at, actor, data) VALUES ('server.started', ${Date.now()}, 'x', '{}')`);
    });
    expect((await v2(['--key', key])).report.ok).toBe(true);
  });

  it('an inserted event with a forged leaf index (duplicate, or past the tree) is named', async () => {
    let fake = 0;
    const { verify } = await attack(async (q) => {
      await q('DROP INDEX events_leaf_index');
      const r = await rowAt(q, 2);
      const forged = { ...r, data: '{"forged":true}' };
      await q(
        'INSERT INTO events (type, at, client_id, actor, data, leaf_index, leaf_hash) VALUES ($1, $2, $3, $4, $5, 2, $6)',
        [r.type, r.at, r.client_id, r.actor, forged.data, eventLeafHash({ ...forged, id: 0 }).toString('base64')],
      );
      fake = Number((await q('SELECT max(id) AS id FROM events'))[0]?.id);
      // Its leaf hash must match its own id, or the entry check alone would catch it: recompute with the real id.
      const row = toRow((await q('SELECT * FROM events WHERE id = $1', [fake]))[0] as Record<string, unknown>);
      await q('UPDATE events SET leaf_hash = $1 WHERE id = $2', [eventLeafHash(row).toString('base64'), fake]);
    });
    const { report } = await verify(['--key', key]);
    expect(report.problems[0]).toMatchObject({ kind: 'leaf_duplicate', leaf_index: 2, event_id: fake });

    let beyond = 0;
    const { verify: v2 } = await attack(async (q) => {
      await q(
        `INSERT INTO events (type, at, client_id, actor, data, leaf_index) VALUES ('token.issued', ${Date.now()}, 'svc', 'dba', '{}', ${total})`,
      );
      beyond = Number((await q('SELECT max(id) AS id FROM events'))[0]?.id);
      const row = toRow((await q('SELECT * FROM events WHERE id = $1', [beyond]))[0] as Record<string, unknown>);
      await q('UPDATE events SET leaf_hash = $1 WHERE id = $2', [eventLeafHash(row).toString('base64'), beyond]);
    });
    const r2 = (await v2(['--key', key])).report;
    expect(r2.problems[0]).toMatchObject({ kind: 'leaf_beyond_frontier', leaf_index: total, event_id: beyond });
  });

  it('reordered events (two leaf indices swapped) fail the first checkpoint after the first swapped leaf', async () => {
    const b = Math.min(total - 1, 8);
    let moved = 0;
    const { verify } = await attack(async (q) => {
      moved = (await rowAt(q, b)).id;
      await q('UPDATE events SET leaf_index = -1 WHERE leaf_index = 2');
      await q(`UPDATE events SET leaf_index = 2 WHERE leaf_index = ${b}`);
      await q(`UPDATE events SET leaf_index = ${b} WHERE leaf_index = -1`);
    });
    const { report } = await verify(['--key', key]);
    const first = report.problems[0] as Problem;
    expect(first).toMatchObject({ kind: 'checkpoint_root', checkpoint: firstCpAbove(2) });
    expect(Number(/among leaves (\d+)\.\./.exec(first.message)?.[1])).toBeLessThanOrEqual(2);
    if (firstCpAbove(2) > 3) expect(first.message).toContain(`older than event ${moved} at leaf 2`);
  });

  it('a truncated tail (events, checkpoints and frontier rewound) is caught only by the external checkpoints', async () => {
    const k = cps[Math.floor(cps.length / 2)] as number;
    expect(k).toBeLessThan(total);
    const { verify } = await attack(async (q) => {
      await q(`DELETE FROM events WHERE leaf_index >= ${k}`);
      await q(`DELETE FROM audit_checkpoints WHERE tree_size > ${k}`);
      await rewriteTree(q); // the frontier of the first k leaves
    });
    // The database alone is consistent again: this is why checkpoints go outside it.
    expect((await verify(['--key', key])).report.ok).toBe(true);
    const { report } = await verify(['--key', key, '--checkpoints', sinkFile]);
    expect(report.problems[0]).toMatchObject({ kind: 'external_beyond_tree', checkpoint: firstCpAbove(k) });
    expect(report.problems[0]?.source).toMatch(/checkpoints\.jsonl:\d+$/);
    // A single pinned checkpoint (the newest note, kept by an auditor) catches it as well.
    const pinned = join(makeTempDir('portcullis-pin-'), 'pinned.jsonl');
    const lines = (await import('node:fs')).readFileSync(sinkFile, 'utf8').trim().split('\n');
    writeFileSync(pinned, `${lines.at(-1)}\n`);
    const p = await verify(['--key', key, '--checkpoints', pinned]);
    expect(p.report.problems[0]).toMatchObject({ kind: 'external_beyond_tree', checkpoint: cps.at(-1) });
  });

  it('a forged checkpoint (altered note) is named by its tree size', async () => {
    const target = cps[1] as number;
    const { verify } = await attack(async (q) => {
      const c = (await q('SELECT note, root_hash FROM audit_checkpoints WHERE tree_size = $1', [target]))[0];
      const fake = Buffer.alloc(32, 7).toString('base64');
      await q('UPDATE audit_checkpoints SET note = $1, root_hash = $2 WHERE tree_size = $3', [
        String(c?.note).replace(String(c?.root_hash), fake),
        fake,
        target,
      ]);
    });
    const { report } = await verify(['--key', key]);
    expect(report.problems[0]).toMatchObject({ kind: 'checkpoint_signature', checkpoint: target });
  });

  it('checkpoints re-signed by an attacker key that replaced audit_keys: caught with the pinned key', async () => {
    const { verify } = await attack(async (q) => rewriteTree(q, generateAuditKeyPem()));
    expect((await verify()).report.ok).toBe(true); // trusting the database's keys: nothing to see
    const { report } = await verify(['--key', key]);
    expect(report.problems[0]).toMatchObject({ kind: 'checkpoint_signature', checkpoint: cps[0] });
  });

  it('a consistent rewrite of everything (entries, tree, checkpoints, key): caught by the pinned key and the external copy', async () => {
    const { verify } = await attack(async (q) => {
      await q(`UPDATE events SET data = '{"scope":"admin"}' WHERE leaf_index = 3`);
      await rewriteTree(q, generateAuditKeyPem());
    });
    expect((await verify()).report.ok).toBe(true);
    const pinned = await verify(['--key', key]);
    expect(pinned.report.problems[0]).toMatchObject({ kind: 'checkpoint_signature', checkpoint: cps[0] });
    const external = await verify(['--key', key, '--checkpoints', sinkFile]);
    const root = external.report.problems.find((p) => p.kind === 'external_root');
    expect(root).toMatchObject({ checkpoint: firstCpAbove(3) });
    expect(root?.message).toMatch(/history before leaf \d+ was rewritten/);
  });
}

describe('audit verify against a tampered database (SQLite)', () => tamperSuite('sqlite'));

const pgAvailable = postgresAvailable('audit-verify.test.ts');
(pgAvailable ? describe : describe.skip)(
  `audit verify against a tampered database (PostgreSQL)${pgAvailable ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`,
  () => tamperSuite('postgres'),
);
