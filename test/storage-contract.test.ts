/**
 * The storage contract (src/storage/ports.ts), run against every backend. This suite imports the storage module
 * directly: it is the one place below the HTTP surface that the design asks to test as a contract.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SecurityEvent } from '../src/events/catalogue.ts';
import type {
  AuthorizationCodeRecord,
  ClientRecord,
  DeviceCodeRecord,
  GrantRecord,
  RefreshTokenRecord,
  SigningKeyRecord,
  Storage,
} from '../src/storage/ports.ts';
import { openStorage } from '../src/storage/sql/sql-storage.ts';
import {
  createPostgresDatabase,
  makeTempDir,
  POSTGRES_URL,
  postgresAvailable,
  type TestDatabase,
} from './helpers/server.ts';

interface Backend {
  url: string;
  /** Runs raw SQL on a separate connection (not through the storage module). */
  raw(sql: string): Promise<void>;
  cleanup(): Promise<void>;
}

async function sqliteBackend(): Promise<Backend> {
  const dir = makeTempDir('portcullis-storage-');
  const file = join(dir, 'contract.db');
  return {
    url: `sqlite:${file}`,
    async raw(sql) {
      const db = new Database(file);
      try {
        db.exec(sql);
      } finally {
        db.close();
      }
    },
    async cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function postgresBackend(): Promise<Backend> {
  const db: TestDatabase = await createPostgresDatabase(POSTGRES_URL);
  return {
    url: db.url,
    async raw(sql) {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      try {
        await c.query(sql);
      } finally {
        await c.end();
      }
    },
    cleanup: () => db.drop(),
  };
}

const T0 = 1_800_000_000_000; // epoch ms beyond 2^31 seconds*1000: exercises int8 round-trips

function client(id: string, over: Partial<ClientRecord> = {}): ClientRecord {
  return {
    client_id: id,
    client_name: `Client ${id}`,
    secret_hash: 'a'.repeat(64),
    token_endpoint_auth_method: 'client_secret_basic',
    token_endpoint_auth_signing_alg: null,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    scope: 'orders:read',
    resources: ['https://api.example.com'],
    jwks: null,
    jwks_uri: null,
    disabled: false,
    post_logout_redirect_uris: [],
    require_pushed_authorization_requests: false,
    metadata: {},
    source: 'config',
    created_at: T0,
    updated_at: T0,
    ...over,
  };
}

function key(kid: string, over: Partial<SigningKeyRecord> = {}): SigningKeyRecord {
  return {
    kid,
    alg: 'ES256',
    state: 'next',
    public_jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid },
    private_enc: 'v1.iv.ct.tag',
    created_at: T0,
    activates_at: T0 + 60_000,
    deactivated_at: null,
    retire_at: null,
    revoked_at: null,
    ...over,
  };
}

function event(type: SecurityEvent['type'], over: Partial<SecurityEvent> = {}): SecurityEvent {
  return {
    type,
    at: T0,
    client_id: 'svc',
    subject: 'svc',
    jti: randomUUID(),
    actor: 'test',
    data: { n: 1, nested: { a: [1, 2] } },
    ...over,
  };
}

function grant(id: string, over: Partial<GrantRecord> = {}): GrantRecord {
  return {
    id,
    user_id: 'u1',
    client_id: 'web',
    scope: 'openid orders:read',
    resources: ['https://api.example.com'],
    session_id: 'sess',
    auth_time: T0,
    acr: null,
    amr: ['pwd'],
    created_at: T0,
    revoked_at: null,
    revoked_reason: null,
    ...over,
  };
}

function code(hash: string, over: Partial<AuthorizationCodeRecord> = {}): AuthorizationCodeRecord {
  return {
    code_hash: hash,
    grant_id: 'g1',
    client_id: 'web',
    user_id: 'u1',
    redirect_uri: 'https://app.example.com/cb',
    code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    code_challenge_method: 'S256',
    scope: 'openid orders:read',
    resources: ['https://api.example.com'],
    nonce: 'n-1',
    auth_time: T0,
    acr: null,
    amr: ['pwd'],
    session_id: 'sess',
    created_at: T0,
    expires_at: T0 + 60_000,
    redeemed_at: null,
    dpop_jkt: null,
    ...over,
  };
}

function refresh(hash: string, over: Partial<RefreshTokenRecord> = {}): RefreshTokenRecord {
  return {
    token_hash: hash,
    grant_id: 'g1',
    client_id: 'web',
    user_id: 'u1',
    scope: 'openid offline_access',
    resources: ['https://api.example.com'],
    created_at: T0,
    idle_expires_at: T0 + 86_400_000,
    expires_at: T0 + 30 * 86_400_000,
    rotated_at: null,
    replaced_by: null,
    jkt: null,
    ...over,
  };
}

function device(hash: string, userCode: string, over: Partial<DeviceCodeRecord> = {}): DeviceCodeRecord {
  return {
    device_code_hash: hash,
    user_code: userCode,
    client_id: 'tv',
    scope: 'orders:read',
    resources: ['https://api.example.com'],
    status: 'pending',
    interval_s: 5,
    last_poll_at: null,
    user_id: null,
    session_id: null,
    auth_time: null,
    acr: null,
    amr: null,
    created_at: T0,
    expires_at: T0 + 600_000,
    decided_at: null,
    redeemed_at: null,
    ...over,
  };
}

const backends: Array<[string, () => Promise<Backend>, boolean]> = [
  ['sqlite', sqliteBackend, true],
  ['postgres', postgresBackend, postgresAvailable('storage-contract.test.ts')],
];

describe.each(backends)('storage contract: %s', (name, make, available) => {
  const d = available ? describe : describe.skip;
  d(`${name}${available ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`, () => {
    let backend: Backend;
    let s: Storage;

    beforeAll(async () => {
      backend = await make();
      s = openStorage(backend.url);
    });
    afterAll(async () => {
      await s?.close();
      await backend?.cleanup();
    });

    it('migrate applies migrations once; a second migrate (and a second process) is a no-op', async () => {
      const first = await s.migrate();
      expect(first.length).toBeGreaterThan(0);
      expect(await s.migrate()).toEqual([]);
      const other = openStorage(backend.url);
      try {
        expect(await other.migrate()).toEqual([]);
      } finally {
        await other.close();
      }
      await s.ping();
      expect(s.dialect).toBe(name);
    });

    it('clients: upsert, get, list, update keeps created_at, delete', async () => {
      const a = client('a-client', {
        jwks: { keys: [{ kty: 'EC', kid: 'k' }] },
        redirect_uris: ['https://x.example/cb'],
      });
      await s.clients.upsert(a);
      await s.clients.upsert(client('b-client', { disabled: true }));
      expect(await s.clients.get('a-client')).toEqual(a);
      expect((await s.clients.get('b-client'))?.disabled).toBe(true);
      expect(await s.clients.get('nope')).toBeUndefined();
      expect((await s.clients.list()).map((c) => c.client_id)).toEqual(['a-client', 'b-client']);

      await s.clients.upsert({ ...a, scope: 'orders:write', created_at: T0 + 999, updated_at: T0 + 1000 });
      const updated = await s.clients.get('a-client');
      expect(updated?.scope).toBe('orders:write');
      expect(updated?.updated_at).toBe(T0 + 1000);
      expect(updated?.created_at).toBe(T0);
      expect(typeof updated?.created_at).toBe('number');

      expect(await s.clients.delete('b-client')).toBe(true);
      expect(await s.clients.delete('b-client')).toBe(false);
      expect(await s.clients.get('b-client')).toBeUndefined();
      expect((await s.clients.list()).map((c) => c.client_id)).toEqual(['a-client']);
    });

    it('users: upsert and get', async () => {
      const u = {
        id: 'u1',
        username: 'alice',
        password_hash: null,
        email: 'a@example.com',
        name: 'Alice',
        disabled: false,
        source: 'config',
        created_at: T0,
        updated_at: T0,
      };
      await s.users.upsert(u);
      expect(await s.users.getByUsername('alice')).toEqual(u);
      expect(await s.users.getByUsername('bob')).toBeUndefined();
      expect(await s.users.list()).toHaveLength(1);
    });

    it('keys: insert, list, transition is a compare-and-set', async () => {
      await s.keys.insert(key('k1', { state: 'active', activates_at: T0 }));
      await s.keys.insert(key('k2'));
      await expect(s.keys.insert(key('k2'))).rejects.toThrow();
      const list = await s.keys.list();
      expect(list.map((k) => k.kid)).toEqual(['k1', 'k2']);
      expect(list[1]).toEqual(key('k2'));

      expect(await s.keys.transition('k2', 'next', 'active', {})).toBe(true);
      expect(await s.keys.transition('k2', 'next', 'active', {})).toBe(false);
      expect(await s.keys.transition('nope', 'next', 'active', {})).toBe(false);
      expect(
        await s.keys.transition('k1', 'active', 'retiring', { deactivated_at: T0 + 60_000, retire_at: T0 + 700_000 }),
      ).toBe(true);
      const k1 = (await s.keys.list()).find((k) => k.kid === 'k1')!;
      expect(k1).toMatchObject({ state: 'retiring', deactivated_at: T0 + 60_000, retire_at: T0 + 700_000 });
    });

    it('keys: two concurrent transitions from the same state -> exactly one wins', async () => {
      for (let round = 0; round < 5; round++) {
        const kid = `race-${round}`;
        await s.keys.insert(key(kid, { state: 'active' }));
        const results = await Promise.all([
          s.keys.transition(kid, 'active', 'retiring', { retire_at: T0 + 1 }),
          s.keys.transition(kid, 'active', 'revoked', { revoked_at: T0 + 2 }),
        ]);
        expect(results.filter(Boolean)).toHaveLength(1);
        const final = (await s.keys.list()).find((k) => k.kid === kid)!;
        expect(final.state).toBe(results[0] ? 'retiring' : 'revoked');
        // The loser's changes were not applied.
        if (results[0]) expect(final.revoked_at).toBeNull();
        else expect(final.retire_at).toBeNull();
      }
    });

    it('keys: concurrent transitions inside transactions -> exactly one wins', async () => {
      await s.keys.insert(key('tx-race', { state: 'next' }));
      const results = await Promise.all(
        Array.from({ length: 5 }, () => s.withTransaction((tx) => tx.keys.transition('tx-race', 'next', 'active', {}))),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
    });

    it('revocations: add, listAfter (ordered, limited), find, purgeExpired', async () => {
      const r1 = await s.revocations.add({
        kind: 'jti',
        value: 'j1',
        revoked_at: T0,
        expires_at: T0 + 1000,
        reason: 'test',
      });
      const r2 = await s.revocations.add({
        kind: 'client',
        value: 'svc',
        revoked_at: T0,
        expires_at: T0 + 5000,
        reason: null,
      });
      const r3 = await s.revocations.add({
        kind: 'kid',
        value: 'k1',
        revoked_at: T0,
        expires_at: T0 + 9000,
        reason: null,
      });
      expect(r1).toMatchObject({ kind: 'jti', value: 'j1', revoked_at: T0, expires_at: T0 + 1000, reason: 'test' });
      expect(r1.id).toEqual(expect.any(Number));
      expect(r2.id).toBeGreaterThan(r1.id);
      expect(r3.id).toBeGreaterThan(r2.id);

      expect((await s.revocations.listAfter(0, 100)).map((r) => r.value)).toEqual(['j1', 'svc', 'k1']);
      expect((await s.revocations.listAfter(r1.id, 100)).map((r) => r.value)).toEqual(['svc', 'k1']);
      expect((await s.revocations.listAfter(0, 2)).map((r) => r.value)).toEqual(['j1', 'svc']);
      expect(await s.revocations.listAfter(r3.id, 100)).toEqual([]);

      expect(await s.revocations.find([{ kind: 'jti', value: 'j1' }])).toEqual([r1]);
      expect(await s.revocations.find([{ kind: 'jti', value: 'svc' }])).toEqual([]); // kind matters
      const many = await s.revocations.find([
        { kind: 'jti', value: 'nope' },
        { kind: 'client', value: 'svc' },
        { kind: 'kid', value: 'k1' },
      ]);
      expect(many.map((r) => r.value).sort()).toEqual(['k1', 'svc']);
      expect(await s.revocations.find([])).toEqual([]);

      expect(await s.revocations.purgeExpired(T0 + 5001)).toBe(2);
      expect((await s.revocations.listAfter(0, 100)).map((r) => r.value)).toEqual(['k1']);
      expect(await s.revocations.purgeExpired(T0 + 5001)).toBe(0);
      // ids keep growing after a purge (tailing by id must not miss new records)
      const r4 = await s.revocations.add({
        kind: 'jti',
        value: 'j4',
        revoked_at: T0,
        expires_at: T0 + 1,
        reason: null,
      });
      expect(r4.id).toBeGreaterThan(r3.id);
    });

    it('replay: useOnce is true once, then false; purge frees expired keys', async () => {
      expect(await s.replay.useOnce('pkjwt:jti-1', T0 + 1000)).toBe(true);
      expect(await s.replay.useOnce('pkjwt:jti-1', T0 + 1000)).toBe(false);
      expect(await s.replay.useOnce('pkjwt:jti-2', T0 + 5000)).toBe(true);
      expect(await s.replay.purgeExpired(T0 + 2000)).toBe(1);
      expect(await s.replay.useOnce('pkjwt:jti-1', T0 + 3000)).toBe(true);
      expect(await s.replay.useOnce('pkjwt:jti-2', T0 + 5000)).toBe(false);
    });

    it('replay: 20 concurrent useOnce with the same key -> exactly one true', async () => {
      for (let round = 0; round < 3; round++) {
        const k = `concurrent:${randomUUID()}`;
        const results = await Promise.all(Array.from({ length: 20 }, () => s.replay.useOnce(k, T0 + 60_000)));
        expect(results.filter(Boolean)).toHaveLength(1);
      }
    });

    it('replay: concurrent useOnce from two storage handles (two nodes) -> exactly one true', async () => {
      const other = openStorage(backend.url);
      try {
        const k = `two-nodes:${randomUUID()}`;
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 ? other : s).replay.useOnce(k, T0 + 60_000)),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
      } finally {
        await other.close();
      }
    });

    it('events: append/appendMany/listAfter with monotonic ids, count, JSON round-trip', async () => {
      const before = await s.events.count();
      const id1 = await s.events.append(
        event('token.issued', { data: { aud: 'https://api.example.com', scope: 'a b', exp: 123 } }),
      );
      const id2 = await s.events.append(event('token.revoked', { client_id: null, subject: null, jti: null }));
      expect(id2).toBeGreaterThan(id1);
      await s.events.appendMany(Array.from({ length: 600 }, (_, i) => event('token.issued', { data: { i } })));
      await s.events.appendMany([]);
      expect(await s.events.count()).toBe(before + 602);

      const listed = await s.events.listAfter(id1 - 1, 1000);
      expect(listed[0]).toMatchObject({
        id: id1,
        type: 'token.issued',
        at: T0,
        client_id: 'svc',
        data: { aud: 'https://api.example.com', scope: 'a b', exp: 123 },
      });
      expect(listed[1]).toMatchObject({ id: id2, type: 'token.revoked', client_id: null, subject: null, jti: null });
      expect(listed).toHaveLength(602);
      for (let i = 1; i < listed.length; i++) expect(listed[i]!.id).toBeGreaterThan(listed[i - 1]!.id);
      // appendMany keeps order
      expect(listed.slice(2).map((e) => e.data.i)).toEqual(Array.from({ length: 600 }, (_, i) => i));
      expect(await s.events.listAfter(id1 - 1, 5)).toHaveLength(5);
      expect(typeof listed[0]!.at).toBe('number');
    });

    it('events are append-only: raw UPDATE and DELETE are rejected', async () => {
      const id = await s.events.append(event('client_auth.failed'));
      await expect(backend.raw(`UPDATE events SET type = 'token.issued' WHERE id = ${id}`)).rejects.toThrow(
        /append-only/,
      );
      await expect(backend.raw(`UPDATE events SET data = '{}' WHERE id = ${id}`)).rejects.toThrow(/append-only/);
      await expect(backend.raw(`UPDATE events SET client_id = 'someone-else' WHERE id = ${id}`)).rejects.toThrow(
        /append-only/,
      );
      await expect(backend.raw(`DELETE FROM events WHERE id = ${id}`)).rejects.toThrow(/append-only/);
      await expect(backend.raw('DELETE FROM events')).rejects.toThrow(/append-only/);
      const [e] = await s.events.listAfter(id - 1, 1);
      expect(e).toMatchObject({ id, type: 'client_auth.failed', client_id: 'svc' });
    });

    it('withTransaction commits everything together', async () => {
      const v = await s.withTransaction(async (tx) => {
        await tx.clients.upsert(client('tx-commit'));
        await tx.revocations.add({
          kind: 'jti',
          value: 'tx-commit',
          revoked_at: T0,
          expires_at: T0 + 10 ** 9,
          reason: null,
        });
        await tx.events.append(event('client.created', { client_id: 'tx-commit' }));
        await tx.meta.set('tx-commit', 'yes');
        return 42;
      });
      expect(v).toBe(42);
      expect(await s.clients.get('tx-commit')).toBeDefined();
      expect(await s.revocations.find([{ kind: 'jti', value: 'tx-commit' }])).toHaveLength(1);
      expect(await s.meta.get('tx-commit')).toBe('yes');
    });

    it('withTransaction rolls back everything on throw', async () => {
      await s.keys.insert(key('rollback-key', { state: 'active' }));
      const eventsBefore = await s.events.count();
      const revBefore = await s.revocations.listAfter(0, 10_000);
      const boom = new Error('boom');
      await expect(
        s.withTransaction(async (tx) => {
          await tx.clients.upsert(client('tx-rollback'));
          await tx.clients.delete('a-client');
          await tx.keys.insert(key('tx-rollback-key'));
          expect(await tx.keys.transition('rollback-key', 'active', 'revoked', { revoked_at: T0 })).toBe(true);
          await tx.revocations.add({
            kind: 'jti',
            value: 'tx-rollback',
            revoked_at: T0,
            expires_at: T0 + 10 ** 9,
            reason: null,
          });
          expect(await tx.replay.useOnce('tx-rollback', T0 + 10 ** 9)).toBe(true);
          await tx.events.append(event('client.created', { client_id: 'tx-rollback' }));
          await tx.events.appendMany([event('token.issued'), event('token.issued')]);
          await tx.meta.set('tx-rollback', 'yes');
          // Reads inside the transaction see its own writes.
          expect(await tx.clients.get('tx-rollback')).toBeDefined();
          throw boom;
        }),
      ).rejects.toBe(boom);
      expect(await s.clients.get('tx-rollback')).toBeUndefined();
      expect(await s.clients.get('a-client')).toBeDefined();
      const keys = await s.keys.list();
      expect(keys.find((k) => k.kid === 'tx-rollback-key')).toBeUndefined();
      expect(keys.find((k) => k.kid === 'rollback-key')?.state).toBe('active');
      expect(await s.revocations.listAfter(0, 10_000)).toEqual(revBefore);
      expect(await s.replay.useOnce('tx-rollback', T0 + 10 ** 9)).toBe(true);
      expect(await s.events.count()).toBe(eventsBefore);
      expect(await s.meta.get('tx-rollback')).toBeUndefined();
    });

    it('clients: sign-in metadata round-trips', async () => {
      const c = client('web-meta', {
        grant_types: ['authorization_code', 'refresh_token'],
        redirect_uris: ['https://app.example.com/cb'],
        post_logout_redirect_uris: ['https://app.example.com/bye'],
        require_pushed_authorization_requests: true,
        metadata: { logo_uri: 'https://app.example.com/logo.png' },
      });
      await s.clients.upsert(c);
      expect(await s.clients.get('web-meta')).toEqual(c);
    });

    it('users: getById', async () => {
      expect((await s.users.getById('u1'))?.username).toBe('alice');
      expect(await s.users.getById('nope')).toBeUndefined();
    });

    it('sessions: insert, get, touch, end once, endByUser, purge', async () => {
      const base = {
        user_id: 'u1',
        auth_time: T0,
        amr: ['pwd'],
        acr: null,
        created_at: T0,
        last_seen_at: T0,
        expires_at: T0 + 3_600_000,
        ended_at: null,
        ended_reason: null,
      };
      await s.sessions.insert({ id: 's1', ...base });
      await s.sessions.insert({ id: 's2', ...base });
      await s.sessions.insert({ id: 's3', ...base, user_id: 'u2' });
      await s.sessions.insert({ id: 's-anon', ...base, user_id: null, auth_time: null, amr: [] });
      expect(await s.sessions.get('s1')).toEqual({ id: 's1', ...base });
      expect((await s.sessions.get('s-anon'))?.user_id).toBeNull();
      expect(await s.sessions.get('nope')).toBeUndefined();
      await s.sessions.touch('s1', T0 + 5000);
      await s.sessions.touch('s1', T0 + 1000); // never moves backwards
      expect((await s.sessions.get('s1'))?.last_seen_at).toBe(T0 + 5000);
      expect(await s.sessions.end('s1', T0 + 6000, 'logout')).toBe(true);
      expect(await s.sessions.end('s1', T0 + 7000, 'logout')).toBe(false);
      expect(await s.sessions.get('s1')).toMatchObject({ ended_at: T0 + 6000, ended_reason: 'logout' });
      expect(await s.sessions.endByUser('u1', T0 + 8000, 'user_disabled')).toEqual(['s2']);
      expect(await s.sessions.endByUser('u1', T0 + 8000, 'user_disabled')).toEqual([]);
      expect((await s.sessions.get('s3'))?.ended_at).toBeNull();
      expect(await s.sessions.purgeExpired(T0 + 7000)).toBe(1); // s1 ended before then
      expect(await s.sessions.get('s1')).toBeUndefined();
      expect(await s.sessions.purgeExpired(T0 + 3_600_001)).toBe(3);
    });

    it('grants: insert, get, list, revoke once, revokeByUser (optionally per client)', async () => {
      await s.grants.insert(grant('g1'));
      await s.grants.insert(grant('g2', { client_id: 'other', created_at: T0 + 1 }));
      await s.grants.insert(grant('g3', { created_at: T0 + 2 }));
      await s.grants.insert(grant('g4', { user_id: 'u2' }));
      expect(await s.grants.get('g1')).toEqual(grant('g1'));
      expect(await s.grants.get('nope')).toBeUndefined();
      expect((await s.grants.listByUser('u1')).map((g) => g.id)).toEqual(['g1', 'g2', 'g3']);
      expect(await s.grants.revoke('g1', T0 + 10, 'refresh_token_reused')).toBe(true);
      expect(await s.grants.revoke('g1', T0 + 11, 'again')).toBe(false);
      expect(await s.grants.get('g1')).toMatchObject({ revoked_at: T0 + 10, revoked_reason: 'refresh_token_reused' });
      expect(await s.grants.revokeByUser('u1', T0 + 20, 'consent_withdrawn', 'web')).toEqual(['g3']);
      expect(await s.grants.revokeByUser('u1', T0 + 30, 'user_disabled')).toEqual(['g2']);
      expect((await s.grants.get('g4'))?.revoked_at).toBeNull();
    });

    it('codes: consume hands the code out once, then tells a replay apart; expired and unknown', async () => {
      await s.codes.insert(code('c1'));
      const first = await s.codes.consume('c1', T0 + 1000);
      expect(first).toEqual({ status: 'ok', code: { ...code('c1'), redeemed_at: T0 + 1000 } });
      const again = await s.codes.consume('c1', T0 + 2000);
      expect(again.status).toBe('replayed');
      expect(again.status !== 'not_found' && again.code.grant_id).toBe('g1');
      expect(await s.codes.consume('nope', T0)).toEqual({ status: 'not_found' });
      await s.codes.insert(code('c-exp'));
      const exp = await s.codes.consume('c-exp', T0 + 60_000);
      expect(exp.status).toBe('expired');
      expect(exp.status !== 'not_found' && exp.code.redeemed_at).toBeNull();
      expect(await s.codes.purgeExpired(T0 + 60_001)).toBe(2);
    });

    it('codes: the DPoP key binding (dpop_jkt) round-trips', async () => {
      const jkt = 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs';
      await s.codes.insert(code('c-jkt', { dpop_jkt: jkt }));
      expect((await s.codes.get('c-jkt'))?.dpop_jkt).toBe(jkt);
      const r = await s.codes.consume('c-jkt', T0 + 1000);
      expect(r.status === 'ok' && r.code.dpop_jkt).toBe(jkt);
      await s.codes.insert(code('c-nojkt'));
      expect((await s.codes.get('c-nojkt'))?.dpop_jkt).toBeNull();
    });

    it('codes: 20 concurrent consumes of one code (two handles) -> exactly one ok, the rest replayed', async () => {
      const other = openStorage(backend.url);
      try {
        await s.codes.insert(code('c-race'));
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => (i % 2 ? other : s).codes.consume('c-race', T0 + 1000)),
        );
        expect(results.filter((r) => r.status === 'ok')).toHaveLength(1);
        expect(results.filter((r) => r.status === 'replayed')).toHaveLength(19);
      } finally {
        await other.close();
      }
    });

    it('refresh tokens: rotate is a compare-and-swap; a spent token is recognised as reused', async () => {
      await s.refreshTokens.insert(refresh('r1'));
      expect(await s.refreshTokens.get('r1')).toEqual(refresh('r1'));
      const r = await s.refreshTokens.rotate('r1', refresh('r2', { created_at: T0 + 5 }), T0 + 5);
      expect(r).toEqual({ status: 'rotated', previous: { ...refresh('r1'), rotated_at: T0 + 5, replaced_by: 'r2' } });
      expect(await s.refreshTokens.get('r2')).toEqual(refresh('r2', { created_at: T0 + 5 }));
      const reuse = await s.refreshTokens.rotate('r1', refresh('r3'), T0 + 6);
      expect(reuse.status).toBe('reused');
      expect(reuse.status !== 'not_found' && reuse.previous.replaced_by).toBe('r2');
      expect(await s.refreshTokens.get('r3')).toBeUndefined();
      expect(await s.refreshTokens.rotate('nope', refresh('r4'), T0)).toEqual({ status: 'not_found' });
      expect(await s.refreshTokens.purgeExpired(T0 + 86_400_001)).toBe(2);
    });

    it('refresh tokens: a DPoP-bound token keeps its jkt through insert, get and rotate (RFC 9449 §5)', async () => {
      const jkt = 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs';
      await s.refreshTokens.insert(refresh('rj1', { jkt }));
      expect((await s.refreshTokens.get('rj1'))?.jkt).toBe(jkt);
      const r = await s.refreshTokens.rotate('rj1', refresh('rj2', { jkt }), T0 + 5);
      expect(r.status === 'rotated' && r.previous.jkt).toBe(jkt);
      expect(await s.refreshTokens.get('rj2')).toEqual(refresh('rj2', { jkt }));
    });

    it('refresh tokens: concurrent rotations of one token in transactions -> exactly one wins', async () => {
      // PostgreSQL: two pools (two nodes). SQLite: one handle, as one node has; a second in-process handle would
      // block the thread in busy_timeout while the first waits for the same thread (a test artefact, not a race).
      const other = name === 'postgres' ? openStorage(backend.url) : s;
      try {
        await s.refreshTokens.insert(refresh('rr'));
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) =>
            (i % 2 ? other : s).withTransaction((tx) =>
              tx.refreshTokens.rotate('rr', refresh(`rr-next-${i}`), T0 + 10),
            ),
          ),
        );
        expect(results.filter((r) => r.status === 'rotated')).toHaveLength(1);
        expect(results.filter((r) => r.status === 'reused')).toHaveLength(9);
        const winner = results.findIndex((r) => r.status === 'rotated');
        for (let i = 0; i < 10; i++) expect(!!(await s.refreshTokens.get(`rr-next-${i}`))).toBe(i === winner);
      } finally {
        if (other !== s) await other.close();
      }
    });

    it('consents: grant merges scopes and resources, get, list, withdraw', async () => {
      const c1 = await s.consents.grant('u1', 'web', ['orders:read', 'openid'], ['https://api.example.com'], T0);
      expect(c1).toMatchObject({ scope: 'openid orders:read', created_at: T0, updated_at: T0 });
      const c2 = await s.consents.grant('u1', 'web', ['profile', 'openid'], ['https://b.example.com'], T0 + 5);
      expect(c2).toEqual({
        user_id: 'u1',
        client_id: 'web',
        scope: 'openid orders:read profile',
        resources: ['https://api.example.com', 'https://b.example.com'],
        created_at: T0,
        updated_at: T0 + 5,
      });
      expect(await s.consents.get('u1', 'web')).toEqual(c2);
      await s.consents.grant('u1', 'other', ['openid'], [], T0);
      expect((await s.consents.listByUser('u1')).map((c) => c.client_id)).toEqual(['other', 'web']);
      expect(await s.consents.withdraw('u1', 'web')).toBe(true);
      expect(await s.consents.withdraw('u1', 'web')).toBe(false);
      expect(await s.consents.get('u1', 'web')).toBeUndefined();
    });

    it('authorization requests: single use, bound to the client, short-lived', async () => {
      const req = (id: string, over = {}) => ({
        id_hash: id,
        kind: 'par' as const,
        client_id: 'web',
        params: { response_type: 'code', state: 's' },
        created_at: T0,
        expires_at: T0 + 60_000,
        used_at: null,
        ...over,
      });
      await s.authorizationRequests.insert(req('p1'));
      await s.authorizationRequests.insert(req('p2'));
      await s.authorizationRequests.insert(req('p3', { kind: 'interaction' }));
      expect(await s.authorizationRequests.get('p3')).toEqual(req('p3', { kind: 'interaction' }));
      expect((await s.authorizationRequests.consume('p1', 'evil', T0 + 1)).status).toBe('wrong_client');
      expect(await s.authorizationRequests.consume('p1', 'web', T0 + 1)).toEqual({
        status: 'ok',
        request: req('p1', { used_at: T0 + 1 }),
      });
      expect((await s.authorizationRequests.consume('p1', 'web', T0 + 2)).status).toBe('used');
      expect((await s.authorizationRequests.consume('p2', 'web', T0 + 60_000)).status).toBe('expired');
      expect((await s.authorizationRequests.consume('nope', 'web', T0)).status).toBe('not_found');
      const race = await Promise.all(
        Array.from({ length: 10 }, () => s.authorizationRequests.consume('p3', 'web', T0 + 3)),
      );
      expect(race.filter((r) => r.status === 'ok')).toHaveLength(1);
      expect(await s.authorizationRequests.purgeExpired(T0 + 60_001)).toBe(3);
    });

    it('device codes: decide once, poll with slow_down, redeem exactly once', async () => {
      await s.deviceCodes.insert(device('d1', 'BCDFGHJK'));
      await s.deviceCodes.insert(device('d2', 'LMNPQRST'));
      await expect(s.deviceCodes.insert(device('d3', 'BCDFGHJK'))).rejects.toThrow();
      expect(await s.deviceCodes.get('d1')).toEqual(device('d1', 'BCDFGHJK'));
      expect((await s.deviceCodes.getByUserCode('BCDFGHJK'))?.device_code_hash).toBe('d1');
      expect(await s.deviceCodes.getByUserCode('ZZZZZZZZ')).toBeUndefined();

      const p1 = await s.deviceCodes.poll('d1', T0 + 1000);
      expect(p1).toEqual({ before: device('d1', 'BCDFGHJK'), slowDown: false });
      const p2 = await s.deviceCodes.poll('d1', T0 + 3000); // 2 s < 5 s interval
      expect(p2?.slowDown).toBe(true);
      expect((await s.deviceCodes.get('d1'))?.interval_s).toBe(10);
      const p3 = await s.deviceCodes.poll('d1', T0 + 14_000);
      expect(p3?.slowDown).toBe(false);
      expect(await s.deviceCodes.poll('nope', T0)).toBeUndefined();

      expect(await s.deviceCodes.redeem('d1', T0 + 15_000)).toBeUndefined(); // still pending
      const decision = {
        status: 'approved' as const,
        user_id: 'u1',
        session_id: 'sess',
        auth_time: T0,
        acr: null,
        amr: ['pwd'],
      };
      expect(await s.deviceCodes.decide('BCDFGHJK', decision, T0 + 16_000)).toBe(true);
      expect(await s.deviceCodes.decide('BCDFGHJK', { ...decision, status: 'denied' }, T0 + 16_001)).toBe(false);
      expect(await s.deviceCodes.get('d1')).toMatchObject({ status: 'approved', user_id: 'u1', amr: ['pwd'] });
      const redeemed = await Promise.all(Array.from({ length: 10 }, () => s.deviceCodes.redeem('d1', T0 + 17_000)));
      expect(redeemed.filter(Boolean)).toHaveLength(1);
      expect((await s.deviceCodes.get('d1'))?.status).toBe('redeemed');

      expect(await s.deviceCodes.decide('LMNPQRST', { ...decision, status: 'denied' }, T0 + 700_000)).toBe(false);
      expect(await s.deviceCodes.decide('LMNPQRST', { ...decision, status: 'denied' }, T0 + 1)).toBe(true);
      expect(await s.deviceCodes.redeem('d2', T0 + 2)).toBeUndefined();
      expect(await s.deviceCodes.purgeExpired(T0 + 600_001)).toBe(2);
    });

    it('sign-in writes roll back with the transaction', async () => {
      await expect(
        s.withTransaction(async (tx) => {
          await tx.grants.insert(grant('g-rb'));
          await tx.codes.insert(code('c-rb'));
          await tx.refreshTokens.insert(refresh('r-rb'));
          await tx.consents.grant('u-rb', 'web', ['openid'], [], T0);
          throw new Error('rollback');
        }),
      ).rejects.toThrow('rollback');
      expect(await s.grants.get('g-rb')).toBeUndefined();
      expect(await s.codes.consume('c-rb', T0)).toEqual({ status: 'not_found' });
      expect(await s.refreshTokens.get('r-rb')).toBeUndefined();
      expect(await s.consents.get('u-rb', 'web')).toBeUndefined();
    });

    it('account guard: recordFailure counts atomically (two handles, concurrent), lock, reset', async () => {
      expect(await s.accountGuard.get('u-guard')).toBeUndefined();
      expect(await s.accountGuard.recordFailure('u-guard', T0)).toBe(1);
      const other = openStorage(backend.url);
      try {
        const counts = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 ? other : s).accountGuard.recordFailure('u-guard', T0 + i)),
        );
        expect(counts.sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      } finally {
        await other.close();
      }
      await s.accountGuard.lock('u-guard', T0 + 900_000);
      expect(await s.accountGuard.get('u-guard')).toMatchObject({ failures: 11, locked_until: T0 + 900_000 });
      // A lock rolls back with its transaction.
      await expect(
        s.withTransaction(async (tx) => {
          await tx.accountGuard.recordFailure('u-guard', T0);
          throw new Error('abort');
        }),
      ).rejects.toThrow('abort');
      expect((await s.accountGuard.get('u-guard'))!.failures).toBe(11);
      expect(await s.accountGuard.reset('u-guard')).toBe(true);
      expect(await s.accountGuard.reset('u-guard')).toBe(false);
      expect(await s.accountGuard.get('u-guard')).toBeUndefined();
    });

    it('mfa: TOTP factor round-trips; useTotpStep accepts only a later step, once among concurrent callers', async () => {
      await s.mfa.putTotp({
        user_id: 'u-mfa',
        secret_enc: 'v1.enc',
        confirmed: false,
        last_step: 100,
        created_at: T0,
        confirmed_at: null,
        last_used_at: null,
      });
      expect(await s.mfa.getTotp('u-mfa')).toMatchObject({ confirmed: false, last_step: 100, created_at: T0 });
      expect(await s.mfa.useTotpStep('u-mfa', 100, T0)).toBe(false);
      const other = openStorage(backend.url);
      try {
        const results = await Promise.all(
          Array.from({ length: 10 }, (_, i) => (i % 2 ? other : s).mfa.useTotpStep('u-mfa', 101, T0 + 1)),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
      } finally {
        await other.close();
      }
      expect(await s.mfa.getTotp('u-mfa')).toMatchObject({ confirmed: true, last_step: 101, last_used_at: T0 + 1 });
      expect(await s.mfa.useTotpStep('u-mfa', 99, T0)).toBe(false);
      expect(await s.mfa.useTotpStep('nobody', 500, T0)).toBe(false);
      expect(await s.mfa.deleteTotp('u-mfa')).toBe(true);
      expect(await s.mfa.deleteTotp('u-mfa')).toBe(false);
      expect(await s.mfa.getTotp('u-mfa')).toBeUndefined();
    });

    it('mfa: WebAuthn credentials (several per user, counter update, removal by owner only)', async () => {
      const cred = (id: string, user = 'u-wa') => ({
        id,
        user_id: user,
        public_key: `pk-${id}`,
        counter: 0,
        transports: ['internal', 'hybrid'],
        name: `key ${id}`,
        created_at: T0,
        last_used_at: null,
      });
      await s.mfa.addCredential(cred('c1'));
      await s.mfa.addCredential(cred('c2'));
      await s.mfa.addCredential(cred('c3', 'u-other'));
      await expect(s.mfa.addCredential(cred('c1'))).rejects.toThrow();
      expect((await s.mfa.listCredentials('u-wa')).map((c) => c.id)).toEqual(['c1', 'c2']);
      await s.mfa.useCredential('c1', 7, T0 + 5);
      expect(await s.mfa.getCredential('c1')).toEqual({ ...cred('c1'), counter: 7, last_used_at: T0 + 5 });
      expect(await s.mfa.deleteCredential('u-wa', 'c3')).toBe(false);
      expect(await s.mfa.deleteCredential('u-wa', 'c2')).toBe(true);
      expect((await s.mfa.listCredentials('u-wa')).map((c) => c.id)).toEqual(['c1']);
    });

    it('mfa: recovery codes are single use (concurrently too) and a new set replaces the old', async () => {
      await s.mfa.replaceRecoveryCodes('u-rc', ['h1', 'h2', 'h3'], T0);
      expect(await s.mfa.countRecoveryCodes('u-rc')).toBe(3);
      const results = await Promise.all(Array.from({ length: 10 }, () => s.mfa.useRecoveryCode('u-rc', 'h1', T0)));
      expect(results.filter(Boolean)).toHaveLength(1);
      expect(await s.mfa.useRecoveryCode('u-rc', 'h1', T0)).toBe(false);
      expect(await s.mfa.useRecoveryCode('u-other', 'h2', T0)).toBe(false);
      expect(await s.mfa.countRecoveryCodes('u-rc')).toBe(2);
      await s.mfa.replaceRecoveryCodes('u-rc', ['h4'], T0);
      expect(await s.mfa.useRecoveryCode('u-rc', 'h2', T0)).toBe(false);
      expect(await s.mfa.countRecoveryCodes('u-rc')).toBe(1);
      expect(await s.mfa.deleteRecoveryCodes('u-rc')).toBe(1);
    });

    it('mfa: failures count per user within the window, lock, reset; challenges are taken once', async () => {
      expect(await s.mfa.addFailure('u-f', T0, 60_000)).toBe(1);
      const counts = await Promise.all(Array.from({ length: 5 }, () => s.mfa.addFailure('u-f', T0 + 1, 60_000)));
      expect(counts.sort()).toEqual([2, 3, 4, 5, 6]);
      // A failure after the window starts a new count.
      expect(await s.mfa.addFailure('u-f', T0 + 61_000, 60_000)).toBe(1);
      await s.mfa.lock('u-f', T0 + 600_000, T0 + 61_000);
      expect(await s.mfa.getFailures('u-f')).toEqual({
        user_id: 'u-f',
        failures: 0,
        window_start: T0 + 61_000,
        locked_until: T0 + 600_000,
      });
      await s.mfa.resetFailures('u-f');
      expect(await s.mfa.getFailures('u-f')).toBeUndefined();

      await s.mfa.putChallenge('sid:register', 'old', T0 + 1000);
      await s.mfa.putChallenge('sid:register', 'new', T0 + 1000);
      expect(await s.mfa.takeChallenge('sid:register', T0)).toBe('new');
      expect(await s.mfa.takeChallenge('sid:register', T0)).toBeUndefined();
      await s.mfa.putChallenge('sid:old', 'x', T0 + 1000);
      expect(await s.mfa.takeChallenge('sid:old', T0 + 2000)).toBeUndefined();
    });

    it('mfa writes roll back with the transaction', async () => {
      await expect(
        s.withTransaction(async (tx) => {
          await tx.mfa.replaceRecoveryCodes('u-mrb', ['h'], T0);
          await tx.mfa.addCredential({
            id: 'c-rb',
            user_id: 'u-mrb',
            public_key: 'pk',
            counter: 0,
            transports: [],
            name: 'k',
            created_at: T0,
            last_used_at: null,
          });
          throw new Error('rollback');
        }),
      ).rejects.toThrow('rollback');
      expect(await s.mfa.countRecoveryCodes('u-mrb')).toBe(0);
      expect(await s.mfa.getCredential('c-rb')).toBeUndefined();
    });

    it('audit export: events by correlation column (with types), by type since, cursors only move forward', async () => {
      const ip = `198.51.100.${Math.floor(Math.random() * 250)}`;
      const sid = randomUUID();
      await s.events.appendMany([
        event('login.succeeded', { ip, session_id: sid }),
        event('token.revoked', { ip, session_id: null, at: T0 + 5 }),
        event('token.issued', { ip: '203.0.113.9', session_id: sid }),
      ]);
      const byIp = await s.auditExport.eventsBy('ip', ip, 10);
      expect(byIp.map((e) => e.type)).toEqual(['login.succeeded', 'token.revoked']);
      expect(byIp[0]).toMatchObject({ ip, session_id: sid, leaf_index: null });
      expect(typeof byIp[0]!.data).toBe('string');
      expect((await s.auditExport.eventsBy('session_id', sid, 10)).map((e) => e.type)).toEqual([
        'login.succeeded',
        'token.issued',
      ]);
      expect((await s.auditExport.eventsBy('ip', ip, 10, ['token.revoked'])).map((e) => e.type)).toEqual([
        'token.revoked',
      ]);
      expect(await s.auditExport.eventsBy('ip', ip, 10, [])).toEqual([]);
      expect((await s.auditExport.eventsBy('ip', ip, 1)).length).toBe(1);
      const since = await s.auditExport.eventsOfType(['token.revoked'], T0 + 5, 1000);
      expect(since.every((e) => e.type === 'token.revoked' && e.at >= T0 + 5)).toBe(true);
      expect(since.some((e) => e.ip === ip)).toBe(true);

      const sink = `sink-${randomUUID()}`;
      expect(await s.auditExport.cursor(sink)).toBe(-1);
      await s.auditExport.advance(sink, 41, T0);
      expect(await s.auditExport.cursor(sink)).toBe(41);
      await s.auditExport.advance(sink, 7, T0); // a late, stale commit never moves it back
      expect(await s.auditExport.cursor(sink)).toBe(41);
      await s.auditExport.advance(sink, 3_000_000_000, T0);
      expect(await s.auditExport.cursor(sink)).toBe(3_000_000_000);
    });

    it('audit export: one holder of a sink lock at a time (PostgreSQL: across pools; SQLite: one node)', async () => {
      if (name !== 'postgres') {
        expect(await s.withTransaction((tx) => tx.auditExport.lockExport('x'))).toBe(true);
        return;
      }
      const other = openStorage(backend.url);
      try {
        let release!: () => void;
        const held = new Promise<void>((r) => {
          release = r;
        });
        let locked!: () => void;
        const gotIt = new Promise<void>((r) => {
          locked = r;
        });
        const first = s.withTransaction(async (tx) => {
          expect(await tx.auditExport.lockExport('siem')).toBe(true);
          locked();
          await held;
        });
        await gotIt;
        expect(await other.withTransaction((tx) => tx.auditExport.lockExport('siem'))).toBe(false);
        expect(await other.withTransaction((tx) => tx.auditExport.lockExport('another-sink'))).toBe(true);
        // The sealer's lock is a different one.
        expect(await other.withTransaction((tx) => tx.audit.lockSealer(false))).toBe(true);
        release();
        await first;
        expect(await other.withTransaction((tx) => tx.auditExport.lockExport('siem'))).toBe(true);
      } finally {
        await other.close();
      }
    });

    it('meta: get/set overwrite', async () => {
      expect(await s.meta.get('missing')).toBeUndefined();
      await s.meta.set('k', 'v1');
      await s.meta.set('k', 'v2');
      expect(await s.meta.get('k')).toBe('v2');
    });
  });
});
