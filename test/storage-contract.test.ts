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
import type { ClientRecord, SigningKeyRecord, Storage } from '../src/storage/ports.ts';
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

    it('meta: get/set overwrite', async () => {
      expect(await s.meta.get('missing')).toBeUndefined();
      await s.meta.set('k', 'v1');
      await s.meta.set('k', 'v2');
      expect(await s.meta.get('k')).toBe('v2');
    });
  });
});
