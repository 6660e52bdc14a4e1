/**
 * Audit proofs: `portcullis audit proof` and the admin API produce inclusion and consistency proofs that the
 * standalone verifier (tools/verify-audit-proof.mjs, run as its own process, also under the system's older Node when
 * there is one) accepts with the pinned verifier key, and rejects once anything in them is altered. Bad input to the
 * admin routes is a 400 naming the parameter; unknown or unsealed events are 404s.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAuditKeyPem, verifierKey } from '../src/audit/note.ts';
import { adminGet, adminToken, withAdmin } from './helpers/admin.ts';
import { query } from './helpers/db.ts';
import { baseConfig, getToken } from './helpers/oauth.ts';
import { makeTempDir, NODE, REPO_ROOT, type RunningServer, startServer } from './helpers/server.ts';

const VERIFIER = join(REPO_ROOT, 'tools', 'verify-audit-proof.mjs');
/** Node 24 (vitest's), and the system Node (20 here) when present: the verifier promises any Node >= 18. */
const NODES = [NODE, ...(existsSync('/usr/bin/node') ? ['/usr/bin/node'] : [])];
const dir = makeTempDir('portcullis-proofs-');
let n = 0;

function runVerifier(proof: unknown, keys: string[], node = NODE): { code: number | null; out: string } {
  const file = join(dir, `proof-${n++}.json`);
  writeFileSync(file, typeof proof === 'string' ? proof : JSON.stringify(proof));
  const r = spawnSync(node, [VERIFIER, ...keys.flatMap((k) => ['--key', k]), file], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout + r.stderr };
}

type Json = Record<string, unknown> & { proof: string[] };

describe('audit proofs and the standalone verifier', () => {
  let server: RunningServer;
  let key: string;
  let token: string;
  let cps: number[];
  let eventId: number;
  const base = baseConfig();
  const { config, ops } = withAdmin({ ...base.config, issuer: 'https://auth.example.test' });

  beforeAll(async () => {
    // The server does not seal (audit.seal false): `audit seal` decides what is sealed, so some events stay unsealed.
    server = await startServer({ ...config, audit: { seal: false } });
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) await getToken(server, base.clients.svc);
      expect((await server.cli(['audit', 'seal'])).code).toBe(0);
    }
    key = (await server.cli(['audit', 'key'])).stdout.trim();
    token = await adminToken(server, ops);
    cps = (
      await query<{ tree_size: number }>(server, 'SELECT tree_size FROM audit_checkpoints ORDER BY tree_size')
    ).map((r) => Number(r.tree_size));
    expect(cps.length).toBe(3);
    eventId = Number(
      (await query<{ id: number }>(server, "SELECT id FROM events WHERE type = 'token.issued' ORDER BY id LIMIT 1"))[0]
        ?.id,
    );
  }, 60_000);
  afterAll(async () => {
    await server?.close();
  });

  async function cliProof(args: string[]): Promise<Json> {
    const r = await server.cli(['audit', 'proof', ...args]);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Json;
  }

  it('an inclusion proof from the CLI verifies standalone, against the newest and an older checkpoint', async () => {
    const proof = await cliProof(['--event', String(eventId)]);
    expect(proof).toMatchObject({ type: 'inclusion', tree_size: cps.at(-1), event: { id: eventId } });
    expect((proof.checkpoint as { note: string }).note).toMatch(/^auth\.example\.test\/audit\n\d+\n/);
    for (const node of NODES) {
      const v = runVerifier(proof, [key], node);
      expect(v.code, `${node}: ${v.out}`).toBe(0);
      expect(v.out).toMatch(new RegExp(`^OK: event ${eventId} is leaf \\d+ of auth\\.example\\.test/audit`));
    }
    const older = await cliProof(['--event', String(eventId), '--tree-size', String(cps[0])]);
    expect(older.tree_size).toBe(cps[0]);
    expect(runVerifier(older, [key]).code).toBe(0);
  });

  it('a consistency proof from the CLI verifies standalone', async () => {
    const proof = await cliProof(['--from', String(cps[0]), '--to', String(cps[2])]);
    expect(proof).toMatchObject({ type: 'consistency', from: { tree_size: cps[0] }, to: { tree_size: cps[2] } });
    for (const node of NODES) {
      const v = runVerifier(proof, [key], node);
      expect(v.code, v.out).toBe(0);
      expect(v.out).toContain(`the tree of size ${cps[0]} is a prefix of the tree of size ${cps[2]}`);
    }
  });

  it('the admin API returns the same proofs, which verify standalone', async () => {
    const inc = await adminGet(server, `/admin/audit/proofs/inclusion?event_id=${eventId}`, token);
    expect(inc.status).toBe(200);
    expect(inc.headers.get('cache-control')).toBe('no-store');
    expect(inc.json).toEqual(await cliProof(['--event', String(eventId)]));
    expect(runVerifier(inc.json, [key]).code).toBe(0);
    const cons = await adminGet(server, `/admin/audit/proofs/consistency?from=${cps[1]}&to=${cps[2]}`, token);
    expect(cons.status).toBe(200);
    expect(runVerifier(cons.json, [key]).code).toBe(0);
    const older = await adminGet(
      server,
      `/admin/audit/proofs/inclusion?event_id=${eventId}&tree_size=${cps[1]}`,
      token,
    );
    expect(older.json.tree_size).toBe(cps[1]);
    expect(runVerifier(older.json, [key]).code).toBe(0);
  });

  it('the standalone verifier rejects altered proofs and other keys', async () => {
    const inc = await cliProof(['--event', String(eventId)]);
    const cons = await cliProof(['--from', String(cps[0]), '--to', String(cps[2])]);
    const flip = (h: string) => {
      const b = Buffer.from(h, 'base64');
      b[0] = (b[0] as number) ^ 1;
      return b.toString('base64');
    };
    const event = inc.event as Record<string, unknown>;
    const cp = inc.checkpoint as { note: string };
    const cases: Array<[string, unknown, RegExp]> = [
      ['a proof hash', { ...inc, proof: [flip(inc.proof[0] as string), ...inc.proof.slice(1)] }, /does not lead/],
      ['the event data', { ...inc, event: { ...event, data: '{"scope":"admin"}' } }, /do not encode to the entry/],
      [
        'the event and entry together',
        { ...inc, event: undefined, entry: (inc.entry as string).replace('token.issued', 'token.revoked') },
        /does not hash to leaf_hash/,
      ],
      ['the leaf index', { ...inc, leaf_index: (inc.leaf_index as number) + 1 }, /does not lead/],
      ['the tree size', { ...inc, tree_size: (inc.tree_size as number) + 1 }, /is for tree size/],
      [
        'the checkpoint note',
        { ...inc, checkpoint: { ...cp, note: cp.note.replace(/\n\d+\n/, '\n99999\n') } },
        /not signed by any of the given keys/,
      ],
      ['a consistency hash', { ...cons, proof: [flip(cons.proof[0] as string), ...cons.proof.slice(1)] }, /prefix/],
      ['not a proof', '{"type":"other"}', /not a Portcullis audit proof/],
    ];
    for (const [what, proof, message] of cases) {
      const v = runVerifier(proof, [key]);
      expect(v.code, `${what}: ${v.out}`).toBe(1);
      expect(v.out, what).toMatch(/^FAILED: /);
      expect(v.out, what).toMatch(message);
    }
    const other = verifierKey('auth.example.test/audit', generateAuditKeyPem().raw);
    const v = runVerifier(inc, [other]);
    expect(v.code).toBe(1);
    expect(v.out).toMatch(/not signed by any of the given keys/);
    expect(runVerifier(inc, [other, key]).code).toBe(0); // any one of several pinned keys (rotation)
    expect(runVerifier(inc, []).out).toMatch(/give the verifier key/);
  });

  it('the admin routes answer 400 naming the parameter, 404 for unknown or unsealed events, 401 without a token', async () => {
    await getToken(server, base.clients.svc); // not sealed: this server does not seal
    const unsealed = Number(
      (await query<{ id: number }>(server, 'SELECT max(id) AS id FROM events WHERE leaf_index IS NULL'))[0]?.id,
    );
    const cases: Array<[string, number, RegExp]> = [
      ['/admin/audit/proofs/inclusion', 400, /event_id parameter is required/],
      ['/admin/audit/proofs/inclusion?event_id=abc', 400, /event_id parameter must be a non-negative integer/],
      [`/admin/audit/proofs/inclusion?event_id=${eventId}&tree_size=-1`, 400, /tree_size parameter/],
      [
        `/admin/audit/proofs/inclusion?event_id=${eventId}&tree_size=${Number(cps[2]) + 1000}`,
        404,
        /no checkpoint of tree/,
      ],
      ['/admin/audit/proofs/inclusion?event_id=999999', 404, /no event with id 999999/],
      [`/admin/audit/proofs/inclusion?event_id=${unsealed}`, 404, /is not sealed yet/],
      ['/admin/audit/proofs/consistency?from=1', 400, /to parameter is required/],
      [`/admin/audit/proofs/consistency?from=${cps[2]}&to=${cps[0]}`, 400, /from must not be larger than to/],
      [`/admin/audit/proofs/consistency?from=${cps[0]}&to=${Number(cps[2]) + 1}`, 404, /no checkpoint of tree size/],
    ];
    for (const [path, status, message] of cases) {
      const r = await adminGet(server, path, token);
      expect(r.status, path).toBe(status);
      expect(r.json.error, path).toBe(status === 400 ? 'invalid_request' : 'not_found');
      expect(String(r.json.error_description), path).toMatch(message);
    }
    const anon = await fetch(`${server.url}/admin/audit/proofs/inclusion?event_id=${eventId}`);
    expect(anon.status).toBe(401);
    const cli = await server.cli(['audit', 'proof', '--event', String(unsealed)]);
    expect(cli.code).toBe(1);
    expect(cli.stderr).toMatch(/is not sealed yet/);
    // Once sealed, it is still not covered by an older checkpoint.
    expect((await server.cli(['audit', 'seal'])).code).toBe(0);
    const late = await adminGet(
      server,
      `/admin/audit/proofs/inclusion?event_id=${unsealed}&tree_size=${cps[0]}`,
      token,
    );
    expect(late.status).toBe(404);
    expect(String(late.json.error_description)).toMatch(/is not covered by the checkpoint of tree size/);
    const both = await server.cli(['audit', 'proof', '--event', '1', '--from', '1']);
    expect(both.code).toBe(1);
    expect(both.stderr).toMatch(/either --event ID/);
  });
});
