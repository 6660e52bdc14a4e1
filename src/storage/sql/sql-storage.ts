import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { SecurityEvent, StoredEvent } from '../../events/catalogue.ts';
import type {
  AccountGuardRecord,
  AccountGuardStore,
  AuditEventRow,
  AuditExportStore,
  AuditKeyRecord,
  AuditStore,
  AuthorizationCodeRecord,
  AuthorizationCodeStore,
  AuthorizationRequestRecord,
  AuthorizationRequestStore,
  CheckpointRecord,
  ClientRecord,
  ClientStore,
  ConsentRecord,
  ConsentStore,
  DeviceCodeRecord,
  DeviceCodeStatus,
  DeviceCodeStore,
  EventStore,
  GrantRecord,
  GrantStore,
  KeyState,
  KeyStore,
  MetaStore,
  MfaStore,
  RefreshTokenRecord,
  RefreshTokenStore,
  ReplayStore,
  RevocationKind,
  RevocationRecord,
  RevocationStore,
  SessionRecord,
  SessionStore,
  SigningKeyRecord,
  Storage,
  Stores,
  TotpFactorRecord,
  UserRecord,
  UserStore,
  WebAuthnCredentialRecord,
} from '../ports.ts';
import { auditExportStore, toAuditRow } from './audit-export-store.ts';
import { migrations } from './migrations.ts';
import { SqliteEventWriter } from './sqlite-event-writer.ts';
import type { DB } from './tables.ts';

type Q = Kysely<DB> | Transaction<DB>;

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toClient(r: DB['clients']): ClientRecord {
  return {
    ...r,
    post_logout_redirect_uris: JSON.parse(r.post_logout_redirect_uris),
    require_pushed_authorization_requests: !!r.require_pushed_authorization_requests,
    metadata: JSON.parse(r.metadata),
    grant_types: JSON.parse(r.grant_types),
    redirect_uris: JSON.parse(r.redirect_uris),
    resources: JSON.parse(r.resources),
    jwks: r.jwks ? JSON.parse(r.jwks) : null,
    disabled: !!r.disabled,
    created_at: num(r.created_at),
    updated_at: num(r.updated_at),
  };
}

function toKey(r: DB['signing_keys']): SigningKeyRecord {
  return {
    ...r,
    state: r.state as KeyState,
    public_jwk: JSON.parse(r.public_jwk),
    created_at: num(r.created_at),
    activates_at: num(r.activates_at),
    deactivated_at: numOrNull(r.deactivated_at),
    retire_at: numOrNull(r.retire_at),
    revoked_at: numOrNull(r.revoked_at),
  };
}

function toRevocation(r: { id: unknown } & Omit<DB['revocations'], 'id'>): RevocationRecord {
  return {
    id: num(r.id),
    kind: r.kind as RevocationKind,
    value: r.value,
    revoked_at: num(r.revoked_at),
    expires_at: num(r.expires_at),
    reason: r.reason,
  };
}

function toUser(r: DB['users']): UserRecord {
  return { ...r, disabled: !!r.disabled, created_at: num(r.created_at), updated_at: num(r.updated_at) };
}

function toGuard(r: DB['account_guard']): AccountGuardRecord {
  return {
    user_id: r.user_id,
    failures: Number(r.failures),
    last_failure_at: num(r.last_failure_at),
    locked_until: numOrNull(r.locked_until),
  };
}

function toSession(r: DB['sessions']): SessionRecord {
  return {
    ...r,
    auth_time: numOrNull(r.auth_time),
    amr: JSON.parse(r.amr),
    created_at: num(r.created_at),
    last_seen_at: num(r.last_seen_at),
    expires_at: num(r.expires_at),
    ended_at: numOrNull(r.ended_at),
  };
}

function toGrant(r: DB['grants']): GrantRecord {
  return {
    ...r,
    resources: JSON.parse(r.resources),
    amr: JSON.parse(r.amr),
    auth_time: numOrNull(r.auth_time),
    created_at: num(r.created_at),
    revoked_at: numOrNull(r.revoked_at),
  };
}

function toCode(r: DB['authorization_codes']): AuthorizationCodeRecord {
  return {
    ...r,
    resources: JSON.parse(r.resources),
    amr: JSON.parse(r.amr),
    auth_time: num(r.auth_time),
    created_at: num(r.created_at),
    expires_at: num(r.expires_at),
    redeemed_at: numOrNull(r.redeemed_at),
  };
}

function toRefresh(r: DB['refresh_tokens']): RefreshTokenRecord {
  return {
    ...r,
    resources: JSON.parse(r.resources),
    created_at: num(r.created_at),
    idle_expires_at: num(r.idle_expires_at),
    expires_at: num(r.expires_at),
    rotated_at: numOrNull(r.rotated_at),
  };
}

function refreshRow(r: RefreshTokenRecord): DB['refresh_tokens'] {
  return { ...r, resources: JSON.stringify(r.resources) };
}

function toConsent(r: DB['consents']): ConsentRecord {
  return { ...r, resources: JSON.parse(r.resources), created_at: num(r.created_at), updated_at: num(r.updated_at) };
}

function toRequest(r: DB['authorization_requests']): AuthorizationRequestRecord {
  return {
    ...r,
    kind: r.kind as AuthorizationRequestRecord['kind'],
    params: JSON.parse(r.params),
    created_at: num(r.created_at),
    expires_at: num(r.expires_at),
    used_at: numOrNull(r.used_at),
  };
}

function toDevice(r: DB['device_codes']): DeviceCodeRecord {
  return {
    ...r,
    resources: JSON.parse(r.resources),
    status: r.status as DeviceCodeStatus,
    interval_s: num(r.interval_s),
    last_poll_at: numOrNull(r.last_poll_at),
    auth_time: numOrNull(r.auth_time),
    amr: r.amr === null ? null : JSON.parse(r.amr),
    created_at: num(r.created_at),
    expires_at: num(r.expires_at),
    decided_at: numOrNull(r.decided_at),
    redeemed_at: numOrNull(r.redeemed_at),
  };
}

function eventRow(e: SecurityEvent) {
  return {
    type: e.type,
    at: e.at,
    client_id: e.client_id ?? null,
    subject: e.subject ?? null,
    jti: e.jti ?? null,
    grant_id: e.grant_id ?? null,
    request_id: e.request_id ?? null,
    actor: e.actor ?? null,
    session_id: e.session_id ?? null,
    ip: e.ip ?? null,
    data: JSON.stringify(e.data),
    leaf_index: null,
  };
}

function toTotp(r: DB['mfa_totp']): TotpFactorRecord {
  return {
    ...r,
    confirmed: !!r.confirmed,
    last_step: num(r.last_step),
    created_at: num(r.created_at),
    confirmed_at: numOrNull(r.confirmed_at),
    last_used_at: numOrNull(r.last_used_at),
  };
}

function toCredential(r: DB['webauthn_credentials']): WebAuthnCredentialRecord {
  return {
    ...r,
    counter: num(r.counter),
    transports: JSON.parse(r.transports),
    created_at: num(r.created_at),
    last_used_at: numOrNull(r.last_used_at),
  };
}

function mfaStore(q: Q): MfaStore {
  return {
    async getTotp(userId) {
      const r = await q.selectFrom('mfa_totp').selectAll().where('user_id', '=', userId).executeTakeFirst();
      return r ? toTotp(r) : undefined;
    },
    async putTotp(t) {
      const row = { ...t, confirmed: t.confirmed ? 1 : 0 };
      const { user_id: _u, ...update } = row;
      await q
        .insertInto('mfa_totp')
        .values(row)
        .onConflict((oc) => oc.column('user_id').doUpdateSet(update))
        .execute();
    },
    async useTotpStep(userId, step, now) {
      const r = await q
        .updateTable('mfa_totp')
        .set({ last_step: step, last_used_at: now, confirmed: 1 })
        .where('user_id', '=', userId)
        .where('last_step', '<', step)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    async deleteTotp(userId) {
      const r = await q.deleteFrom('mfa_totp').where('user_id', '=', userId).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },
    async listCredentials(userId) {
      return (
        await q
          .selectFrom('webauthn_credentials')
          .selectAll()
          .where('user_id', '=', userId)
          .orderBy('created_at')
          .orderBy('id')
          .execute()
      ).map(toCredential);
    },
    async getCredential(id) {
      const r = await q.selectFrom('webauthn_credentials').selectAll().where('id', '=', id).executeTakeFirst();
      return r ? toCredential(r) : undefined;
    },
    async addCredential(c) {
      await q
        .insertInto('webauthn_credentials')
        .values({ ...c, transports: JSON.stringify(c.transports) })
        .execute();
    },
    async useCredential(id, counter, now) {
      await q.updateTable('webauthn_credentials').set({ counter, last_used_at: now }).where('id', '=', id).execute();
    },
    async deleteCredential(userId, id) {
      const r = await q
        .deleteFrom('webauthn_credentials')
        .where('user_id', '=', userId)
        .where('id', '=', id)
        .executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },
    async replaceRecoveryCodes(userId, hashes, now) {
      await q.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
      if (hashes.length)
        await q
          .insertInto('recovery_codes')
          .values(hashes.map((h) => ({ user_id: userId, code_hash: h, created_at: now, used_at: null })))
          .execute();
    },
    async countRecoveryCodes(userId) {
      const r = await q
        .selectFrom('recovery_codes')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('user_id', '=', userId)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      return num(r?.n ?? 0);
    },
    async useRecoveryCode(userId, hash, now) {
      const r = await q
        .updateTable('recovery_codes')
        .set({ used_at: now })
        .where('user_id', '=', userId)
        .where('code_hash', '=', hash)
        .where('used_at', 'is', null)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    async deleteRecoveryCodes(userId) {
      const r = await q.deleteFrom('recovery_codes').where('user_id', '=', userId).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
    async getFailures(userId) {
      const r = await q.selectFrom('mfa_failures').selectAll().where('user_id', '=', userId).executeTakeFirst();
      return r
        ? {
            user_id: r.user_id,
            failures: num(r.failures),
            window_start: num(r.window_start),
            locked_until: numOrNull(r.locked_until),
          }
        : undefined;
    },
    async addFailure(userId, now, windowMs) {
      // One statement per case so concurrent failures from several sessions are all counted.
      const inWindow = await q
        .updateTable('mfa_failures')
        .set((eb) => ({ failures: eb('failures', '+', 1) }))
        .where('user_id', '=', userId)
        .where('window_start', '>', now - windowMs)
        .returning('failures')
        .executeTakeFirst();
      if (inWindow) return num(inWindow.failures);
      const r = await q
        .insertInto('mfa_failures')
        .values({ user_id: userId, failures: 1, window_start: now, locked_until: null })
        .onConflict((oc) => oc.column('user_id').doUpdateSet({ failures: 1, window_start: now }))
        .returning('failures')
        .executeTakeFirstOrThrow();
      return num(r.failures);
    },
    async lock(userId, until, now) {
      await q
        .insertInto('mfa_failures')
        .values({ user_id: userId, failures: 0, window_start: now, locked_until: until })
        .onConflict((oc) => oc.column('user_id').doUpdateSet({ failures: 0, window_start: now, locked_until: until }))
        .execute();
    },
    async resetFailures(userId) {
      await q.deleteFrom('mfa_failures').where('user_id', '=', userId).execute();
    },
    async putChallenge(key, challenge, expiresAt) {
      await q
        .insertInto('mfa_challenges')
        .values({ id: key, challenge, expires_at: expiresAt })
        .onConflict((oc) => oc.column('id').doUpdateSet({ challenge, expires_at: expiresAt }))
        .execute();
    },
    async takeChallenge(key, now) {
      const r = await q.deleteFrom('mfa_challenges').where('id', '=', key).returningAll().executeTakeFirst();
      await q.deleteFrom('mfa_challenges').where('expires_at', '<', now).execute();
      return r && num(r.expires_at) > now ? r.challenge : undefined;
    },
  };
}

/**
 * Every store over one Kysely handle (the pool, or a transaction). `added` hears every revocation written through
 * these stores (the transaction hands them on only after it commits).
 */
/** An arbitrary constant: the PostgreSQL advisory lock of the audit sealer. */
const SEALER_LOCK = 7_390_214_551;

const setLeafStatements = new WeakMap<Database.Database, Database.Statement>();

function auditStore(q: Q, dialect: 'sqlite' | 'postgres', raw: Database.Database | undefined): AuditStore {
  // SQLite: one prepared UPDATE per event on the same (only) connection, inside the caller's transaction — a
  // joined UPDATE … FROM (VALUES …) has no index on the values and goes quadratic.
  const setLeafStatement = () => {
    if (!raw) return undefined;
    let st = setLeafStatements.get(raw);
    if (!st) {
      st = raw.prepare('UPDATE events SET leaf_index = ?, leaf_hash = ? WHERE id = ? AND +leaf_index IS NULL');
      setLeafStatements.set(raw, st);
    }
    return st;
  };
  return {
    async lockSealer(wait) {
      if (dialect === 'postgres') {
        if (wait) {
          await sql`SELECT pg_advisory_xact_lock(${SEALER_LOCK})`.execute(q);
          return true;
        }
        const r = await sql<{ ok: boolean }>`SELECT pg_try_advisory_xact_lock(${SEALER_LOCK}) AS ok`.execute(q);
        return !!r.rows[0]?.ok;
      }
      // SQLite: the first write takes the database's write lock for the transaction (busy_timeout waits for it).
      await q.updateTable('meta').set({ value: sql`value` }).where('key', '=', 'audit_frontier').execute();
      return true;
    },
    async unsealed(limit) {
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('leaf_index', 'is', null)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map(toAuditRow);
    },
    async assignLeaves(pairs) {
      // SQLite: one prepared UPDATE per event by primary key, on the same (only) connection inside the caller's
      // transaction (a joined UPDATE … FROM (VALUES …) is far slower there).
      const setLeaf = setLeafStatement();
      if (setLeaf) {
        for (const p of pairs) setLeaf.run(p.leaf, p.hash, p.id);
        return;
      }
      // PostgreSQL: one statement per chunk, a hash join against the unnested arrays.
      for (let i = 0; i < pairs.length; i += 5000) {
        const chunk = pairs.slice(i, i + 5000);
        await sql`UPDATE events SET leaf_index = v.leaf, leaf_hash = v.hash FROM unnest(${chunk.map((p) => p.id)}::bigint[], ${chunk.map((p) => p.leaf)}::bigint[], ${chunk.map((p) => p.hash)}::text[]) AS v(id, leaf, hash) WHERE events.id = v.id AND events.leaf_index IS NULL`.execute(
          q,
        );
      }
    },
    async sealed(fromLeaf, limit) {
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('leaf_index', '>=', fromLeaf)
        .orderBy('leaf_index')
        .limit(limit)
        .execute();
      return rows.map(toAuditRow);
    },
    async byLeaves(leaves) {
      if (leaves.length === 0) return [];
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('leaf_index', 'in', leaves)
        .orderBy('leaf_index')
        .execute();
      return rows.map(toAuditRow);
    },
    async scanSealed(fromLeaf, limit) {
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('leaf_index', '>=', fromLeaf)
        .orderBy('leaf_index')
        .orderBy('id')
        .limit(limit)
        .execute();
      // SQLite already returns numbers and exactly these columns: no per-row copy on verify's hot path.
      return dialect === 'sqlite' ? (rows as unknown as AuditEventRow[]) : rows.map(toAuditRow);
    },
    async leafHashes(fromLeaf, toLeaf, limit) {
      const rows = await q
        .selectFrom('events')
        .select(['leaf_index', 'leaf_hash'])
        .where('leaf_index', '>=', fromLeaf)
        .where('leaf_index', '<', toLeaf)
        .orderBy('leaf_index')
        .limit(limit)
        .execute();
      return rows.map((r) => ({ leaf_index: num(r.leaf_index), leaf_hash: r.leaf_hash }));
    },
    async eventRow(id) {
      const r = await q.selectFrom('events').selectAll().where('id', '=', id).executeTakeFirst();
      return r ? toAuditRow(r) : undefined;
    },
    async unsealedAfter(afterId, limit) {
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('leaf_index', 'is', null)
        .where('id', '>', afterId)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map(toAuditRow);
    },
    async countUnsealed() {
      const r = await q
        .selectFrom('events')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('leaf_index', 'is', null)
        .executeTakeFirstOrThrow();
      return num(r.n);
    },
    async pruneBelow(leaf) {
      const r = await q.deleteFrom('events').where('leaf_index', '<', leaf).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
    async addCheckpoint(c: CheckpointRecord) {
      await q.insertInto('audit_checkpoints').values(c).execute();
    },
    async checkpoints() {
      const rows = await q.selectFrom('audit_checkpoints').selectAll().orderBy('tree_size').execute();
      return rows.map((r) => ({ ...r, tree_size: num(r.tree_size), at: num(r.at) }));
    },
    async latestCheckpoint() {
      const r = await q
        .selectFrom('audit_checkpoints')
        .selectAll()
        .orderBy('tree_size', 'desc')
        .limit(1)
        .executeTakeFirst();
      return r ? { ...r, tree_size: num(r.tree_size), at: num(r.at) } : undefined;
    },
    async addKey(k: AuditKeyRecord) {
      await q.insertInto('audit_keys').values(k).execute();
    },
    async keys() {
      const rows = await q.selectFrom('audit_keys').selectAll().orderBy('created_at').execute();
      return rows.map((r) => ({ ...r, created_at: num(r.created_at), retired_at: numOrNull(r.retired_at) }));
    },
  };
}

function bindStores(
  q: Q,
  added: (r: RevocationRecord) => void,
  dialect: 'sqlite' | 'postgres',
  raw?: Database.Database,
): Stores {
  const clients: ClientStore = {
    async get(clientId) {
      const r = await q.selectFrom('clients').selectAll().where('client_id', '=', clientId).executeTakeFirst();
      return r ? toClient(r) : undefined;
    },
    async list() {
      return (await q.selectFrom('clients').selectAll().orderBy('client_id').execute()).map(toClient);
    },
    async upsert(c) {
      const row = {
        ...c,
        grant_types: JSON.stringify(c.grant_types),
        redirect_uris: JSON.stringify(c.redirect_uris),
        resources: JSON.stringify(c.resources),
        jwks: c.jwks ? JSON.stringify(c.jwks) : null,
        disabled: c.disabled ? 1 : 0,
        post_logout_redirect_uris: JSON.stringify(c.post_logout_redirect_uris),
        require_pushed_authorization_requests: c.require_pushed_authorization_requests ? 1 : 0,
        metadata: JSON.stringify(c.metadata),
      };
      const { client_id: _id, created_at: _c, ...update } = row;
      await q
        .insertInto('clients')
        .values(row)
        .onConflict((oc) => oc.column('client_id').doUpdateSet(update))
        .execute();
    },
    async delete(clientId) {
      const r = await q.deleteFrom('clients').where('client_id', '=', clientId).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },
  };
  const users: UserStore = {
    async getByUsername(username) {
      const r = await q.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
      return r ? toUser(r) : undefined;
    },
    async getById(id) {
      const r = await q.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
      return r ? toUser(r) : undefined;
    },
    async list() {
      return (await q.selectFrom('users').selectAll().orderBy('username').execute()).map(toUser);
    },
    async upsert(u: UserRecord) {
      const row = { ...u, disabled: u.disabled ? 1 : 0 };
      const { id: _id, created_at: _c, ...update } = row;
      await q
        .insertInto('users')
        .values(row)
        .onConflict((oc) => oc.column('id').doUpdateSet(update))
        .execute();
    },
  };
  const accountGuard: AccountGuardStore = {
    async get(userId) {
      const r = await q.selectFrom('account_guard').selectAll().where('user_id', '=', userId).executeTakeFirst();
      return r ? toGuard(r) : undefined;
    },
    async recordFailure(userId, now) {
      // One statement, so concurrent failures on several nodes each add one.
      const r = await q
        .insertInto('account_guard')
        .values({ user_id: userId, failures: 1, last_failure_at: now, locked_until: null })
        .onConflict((oc) =>
          oc.column('user_id').doUpdateSet({ failures: sql`account_guard.failures + 1`, last_failure_at: now }),
        )
        .returning('failures')
        .executeTakeFirstOrThrow();
      return Number(r.failures);
    },
    async lock(userId, until) {
      await q.updateTable('account_guard').set({ locked_until: until }).where('user_id', '=', userId).execute();
    },
    async reset(userId) {
      const r = await q.deleteFrom('account_guard').where('user_id', '=', userId).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },
  };
  const keys: KeyStore = {
    async list() {
      return (await q.selectFrom('signing_keys').selectAll().orderBy('activates_at').execute()).map(toKey);
    },
    async insert(k) {
      await q
        .insertInto('signing_keys')
        .values({ ...k, public_jwk: JSON.stringify(k.public_jwk) })
        .execute();
    },
    async transition(kid, from, to, changes) {
      const { public_jwk: _p, kid: _k, ...rest } = changes;
      const r = await q
        .updateTable('signing_keys')
        .set({ ...rest, state: to })
        .where('kid', '=', kid)
        .where('state', '=', from)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
  };
  const revocations: RevocationStore = {
    async add(r) {
      const rec = toRevocation(await q.insertInto('revocations').values(r).returningAll().executeTakeFirstOrThrow());
      added(rec);
      return rec;
    },
    async listAfter(afterId, limit) {
      const rows = await q
        .selectFrom('revocations')
        .selectAll()
        .where('id', '>', afterId)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map(toRevocation);
    },
    async find(pairs) {
      if (pairs.length === 0) return [];
      const rows = await q
        .selectFrom('revocations')
        .selectAll()
        .where((eb) => eb.or(pairs.map((p) => eb.and([eb('kind', '=', p.kind), eb('value', '=', p.value)]))))
        .execute();
      return rows.map(toRevocation);
    },
    async purgeExpired(nowMs) {
      const r = await q.deleteFrom('revocations').where('expires_at', '<', nowMs).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  const replay: ReplayStore = {
    async useOnce(key, expiresAt) {
      const rows = await q
        .insertInto('used_once')
        .values({ key, expires_at: expiresAt })
        .onConflict((oc) => oc.column('key').doNothing())
        .returning('key')
        .execute();
      return rows.length === 1;
    },
    async purgeExpired(nowMs) {
      const r = await q.deleteFrom('used_once').where('expires_at', '<', nowMs).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  const events: EventStore = {
    async append(e) {
      const r = await q.insertInto('events').values(eventRow(e)).returning('id').executeTakeFirstOrThrow();
      return num(r.id);
    },
    async appendMany(list) {
      // 13 columns per row; stay well under SQLite's 32766 bound parameters per statement.
      for (let i = 0; i < list.length; i += 500) {
        await q
          .insertInto('events')
          .values(list.slice(i, i + 500).map(eventRow))
          .execute();
      }
    },
    async listAfter(afterId, limit) {
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('id', '>', afterId)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map((r) => ({
        id: num(r.id),
        type: r.type as StoredEvent['type'],
        at: num(r.at),
        client_id: r.client_id,
        subject: r.subject,
        jti: r.jti,
        grant_id: r.grant_id,
        request_id: r.request_id,
        actor: r.actor,
        session_id: r.session_id,
        ip: r.ip,
        data: JSON.parse(r.data),
        leaf_index: numOrNull(r.leaf_index),
      }));
    },
    async count() {
      const r = await q
        .selectFrom('events')
        .select((eb) => eb.fn.countAll().as('n'))
        .executeTakeFirstOrThrow();
      return num(r.n);
    },
  };
  const meta: MetaStore = {
    async get(key) {
      return (await q.selectFrom('meta').select('value').where('key', '=', key).executeTakeFirst())?.value;
    },
    async set(key, value) {
      await q
        .insertInto('meta')
        .values({ key, value })
        .onConflict((oc) => oc.column('key').doUpdateSet({ value }))
        .execute();
    },
  };
  const sessions: SessionStore = {
    async insert(x) {
      await q
        .insertInto('sessions')
        .values({ ...x, amr: JSON.stringify(x.amr) })
        .execute();
    },
    async get(idHash) {
      const r = await q.selectFrom('sessions').selectAll().where('id', '=', idHash).executeTakeFirst();
      return r ? toSession(r) : undefined;
    },
    async touch(idHash, now) {
      await q
        .updateTable('sessions')
        .set({ last_seen_at: now })
        .where('id', '=', idHash)
        .where('last_seen_at', '<', now)
        .execute();
    },
    async end(idHash, now, reason) {
      const r = await q
        .updateTable('sessions')
        .set({ ended_at: now, ended_reason: reason })
        .where('id', '=', idHash)
        .where('ended_at', 'is', null)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    async endByUser(userId, now, reason) {
      const rows = await q
        .updateTable('sessions')
        .set({ ended_at: now, ended_reason: reason })
        .where('user_id', '=', userId)
        .where('ended_at', 'is', null)
        .returning('id')
        .execute();
      return rows.map((r) => r.id);
    },
    async purgeExpired(before) {
      const r = await q
        .deleteFrom('sessions')
        .where((eb) => eb.or([eb('expires_at', '<', before), eb('ended_at', '<', before)]))
        .executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  const grants: GrantStore = {
    async insert(g) {
      await q
        .insertInto('grants')
        .values({ ...g, resources: JSON.stringify(g.resources), amr: JSON.stringify(g.amr) })
        .execute();
    },
    async get(id) {
      const r = await q.selectFrom('grants').selectAll().where('id', '=', id).executeTakeFirst();
      return r ? toGrant(r) : undefined;
    },
    async listByUser(userId) {
      const rows = await q
        .selectFrom('grants')
        .selectAll()
        .where('user_id', '=', userId)
        .orderBy('created_at')
        .orderBy('id')
        .execute();
      return rows.map(toGrant);
    },
    async revoke(id, now, reason) {
      const r = await q
        .updateTable('grants')
        .set({ revoked_at: now, revoked_reason: reason })
        .where('id', '=', id)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    async revokeByUser(userId, now, reason, clientId) {
      let u = q
        .updateTable('grants')
        .set({ revoked_at: now, revoked_reason: reason })
        .where('user_id', '=', userId)
        .where('revoked_at', 'is', null);
      if (clientId !== undefined) u = u.where('client_id', '=', clientId);
      return (await u.returning('id').execute()).map((r) => r.id);
    },
  };
  const codes: AuthorizationCodeStore = {
    async insert(c) {
      await q
        .insertInto('authorization_codes')
        .values({ ...c, resources: JSON.stringify(c.resources), amr: JSON.stringify(c.amr) })
        .execute();
    },
    async get(codeHash) {
      const r = await q
        .selectFrom('authorization_codes')
        .selectAll()
        .where('code_hash', '=', codeHash)
        .executeTakeFirst();
      return r ? toCode(r) : undefined;
    },
    async consume(codeHash, now) {
      // One conditional UPDATE is the whole race: the database lets exactly one writer flip redeemed_at.
      const won = await q
        .updateTable('authorization_codes')
        .set({ redeemed_at: now })
        .where('code_hash', '=', codeHash)
        .where('redeemed_at', 'is', null)
        .where('expires_at', '>', now)
        .returningAll()
        .executeTakeFirst();
      if (won) return { status: 'ok', code: toCode(won) };
      const r = await q
        .selectFrom('authorization_codes')
        .selectAll()
        .where('code_hash', '=', codeHash)
        .executeTakeFirst();
      if (!r) return { status: 'not_found' };
      const code = toCode(r);
      return { status: code.redeemed_at !== null ? 'replayed' : 'expired', code };
    },
    async purgeExpired(before) {
      const r = await q.deleteFrom('authorization_codes').where('expires_at', '<', before).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  const refreshTokens: RefreshTokenStore = {
    async insert(r) {
      await q.insertInto('refresh_tokens').values(refreshRow(r)).execute();
    },
    async get(tokenHash) {
      const r = await q.selectFrom('refresh_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
      return r ? toRefresh(r) : undefined;
    },
    async rotate(oldHash, next, now) {
      const won = await q
        .updateTable('refresh_tokens')
        .set({ rotated_at: now, replaced_by: next.token_hash })
        .where('token_hash', '=', oldHash)
        .where('rotated_at', 'is', null)
        .returningAll()
        .executeTakeFirst();
      if (won) {
        await q.insertInto('refresh_tokens').values(refreshRow(next)).execute();
        return { status: 'rotated', previous: toRefresh(won) };
      }
      const r = await q.selectFrom('refresh_tokens').selectAll().where('token_hash', '=', oldHash).executeTakeFirst();
      return r ? { status: 'reused', previous: toRefresh(r) } : { status: 'not_found' };
    },
    async purgeExpired(before) {
      const r = await q
        .deleteFrom('refresh_tokens')
        .where((eb) => eb.or([eb('expires_at', '<', before), eb('idle_expires_at', '<', before)]))
        .executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  const consents: ConsentStore = {
    async get(userId, clientId) {
      const r = await q
        .selectFrom('consents')
        .selectAll()
        .where('user_id', '=', userId)
        .where('client_id', '=', clientId)
        .executeTakeFirst();
      return r ? toConsent(r) : undefined;
    },
    async listByUser(userId) {
      const rows = await q
        .selectFrom('consents')
        .selectAll()
        .where('user_id', '=', userId)
        .orderBy('client_id')
        .execute();
      return rows.map(toConsent);
    },
    async grant(userId, clientId, scopes, resources, now) {
      const prev = await consents.get(userId, clientId);
      const rec: ConsentRecord = {
        user_id: userId,
        client_id: clientId,
        scope: [...new Set([...(prev?.scope.split(' ').filter(Boolean) ?? []), ...scopes])].sort().join(' '),
        resources: [...new Set([...(prev?.resources ?? []), ...resources])].sort(),
        created_at: prev?.created_at ?? now,
        updated_at: now,
      };
      const row = { ...rec, resources: JSON.stringify(rec.resources) };
      await q
        .insertInto('consents')
        .values(row)
        .onConflict((oc) =>
          oc.columns(['user_id', 'client_id']).doUpdateSet({
            scope: row.scope,
            resources: row.resources,
            updated_at: row.updated_at,
          }),
        )
        .execute();
      return rec;
    },
    async withdraw(userId, clientId) {
      const r = await q
        .deleteFrom('consents')
        .where('user_id', '=', userId)
        .where('client_id', '=', clientId)
        .executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    },
  };
  const authorizationRequests: AuthorizationRequestStore = {
    async insert(r) {
      await q
        .insertInto('authorization_requests')
        .values({ ...r, params: JSON.stringify(r.params) })
        .execute();
    },
    async get(idHash) {
      const r = await q
        .selectFrom('authorization_requests')
        .selectAll()
        .where('id_hash', '=', idHash)
        .executeTakeFirst();
      return r ? toRequest(r) : undefined;
    },
    async consume(idHash, clientId, now) {
      const won = await q
        .updateTable('authorization_requests')
        .set({ used_at: now })
        .where('id_hash', '=', idHash)
        .where('client_id', '=', clientId)
        .where('used_at', 'is', null)
        .where('expires_at', '>', now)
        .returningAll()
        .executeTakeFirst();
      if (won) return { status: 'ok', request: toRequest(won) };
      const r = await authorizationRequests.get(idHash);
      if (!r) return { status: 'not_found' };
      const status = r.client_id !== clientId ? 'wrong_client' : r.used_at !== null ? 'used' : 'expired';
      return { status, request: r };
    },
    async purgeExpired(before) {
      const r = await q.deleteFrom('authorization_requests').where('expires_at', '<', before).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  const deviceCodes: DeviceCodeStore = {
    async insert(d) {
      await q
        .insertInto('device_codes')
        .values({ ...d, resources: JSON.stringify(d.resources), amr: d.amr === null ? null : JSON.stringify(d.amr) })
        .execute();
    },
    async get(hash) {
      const r = await q.selectFrom('device_codes').selectAll().where('device_code_hash', '=', hash).executeTakeFirst();
      return r ? toDevice(r) : undefined;
    },
    async getByUserCode(userCode) {
      const r = await q.selectFrom('device_codes').selectAll().where('user_code', '=', userCode).executeTakeFirst();
      return r ? toDevice(r) : undefined;
    },
    async decide(userCode, d, now) {
      const r = await q
        .updateTable('device_codes')
        .set({
          status: d.status,
          user_id: d.user_id,
          session_id: d.session_id,
          auth_time: d.auth_time,
          acr: d.acr,
          amr: JSON.stringify(d.amr),
          decided_at: now,
        })
        .where('user_code', '=', userCode)
        .where('status', '=', 'pending')
        .where('expires_at', '>', now)
        .executeTakeFirst();
      return Number(r.numUpdatedRows) > 0;
    },
    async poll(hash, now) {
      const before = await deviceCodes.get(hash);
      if (!before) return undefined;
      const slowDown = before.last_poll_at !== null && now - before.last_poll_at < before.interval_s * 1000;
      await q
        .updateTable('device_codes')
        .set({ last_poll_at: now, interval_s: slowDown ? before.interval_s + 5 : before.interval_s })
        .where('device_code_hash', '=', hash)
        .execute();
      return { before, slowDown };
    },
    async redeem(hash, now) {
      const r = await q
        .updateTable('device_codes')
        .set({ status: 'redeemed', redeemed_at: now })
        .where('device_code_hash', '=', hash)
        .where('status', '=', 'approved')
        .where('expires_at', '>', now)
        .returningAll()
        .executeTakeFirst();
      return r ? toDevice(r) : undefined;
    },
    async purgeExpired(before) {
      const r = await q.deleteFrom('device_codes').where('expires_at', '<', before).executeTakeFirst();
      return Number(r.numDeletedRows);
    },
  };
  return {
    clients,
    users,
    accountGuard,
    keys,
    revocations,
    replay,
    events,
    audit: auditStore(q, dialect, raw),
    auditExport: auditExportStore(q, dialect),
    meta,
    sessions,
    grants,
    codes,
    refreshTokens,
    consents,
    authorizationRequests,
    deviceCodes,
    mfa: mfaStore(q),
  };
}

class SqlStorage implements Storage {
  readonly dialect: 'sqlite' | 'postgres';
  readonly db: Kysely<DB>;
  private readonly sqlite: Database.Database | undefined;
  clients: ClientStore;
  users: UserStore;
  accountGuard: AccountGuardStore;
  keys: KeyStore;
  revocations: RevocationStore;
  replay: ReplayStore;
  events: EventStore;
  audit: AuditStore;
  auditExport: AuditExportStore;
  meta: MetaStore;
  sessions: SessionStore;
  grants: GrantStore;
  codes: AuthorizationCodeStore;
  refreshTokens: RefreshTokenStore;
  consents: ConsentStore;
  authorizationRequests: AuthorizationRequestStore;
  deviceCodes: DeviceCodeStore;
  mfa: MfaStore;

  private readonly file: string | undefined;

  constructor(dialect: 'sqlite' | 'postgres', db: Kysely<DB>, sqlite?: Database.Database, file?: string) {
    this.file = file;
    this.dialect = dialect;
    this.db = db;
    this.sqlite = sqlite;
    const s = bindStores(db, (r) => this.emitRevocations([r]), dialect, sqlite);
    this.clients = s.clients;
    this.users = s.users;
    this.accountGuard = s.accountGuard;
    this.keys = s.keys;
    this.revocations = s.revocations;
    this.replay = s.replay;
    this.events = s.events;
    this.audit = s.audit;
    this.auditExport = s.auditExport;
    this.meta = s.meta;
    this.sessions = s.sessions;
    this.grants = s.grants;
    this.codes = s.codes;
    this.refreshTokens = s.refreshTokens;
    this.consents = s.consents;
    this.authorizationRequests = s.authorizationRequests;
    this.deviceCodes = s.deviceCodes;
    this.mfa = s.mfa;
  }

  private readonly revocationListeners: Array<(recs: RevocationRecord[]) => void> = [];

  onRevocations(listener: (recs: RevocationRecord[]) => void): void {
    this.revocationListeners.push(listener);
  }

  private emitRevocations(recs: RevocationRecord[]): void {
    if (recs.length === 0) return;
    for (const l of this.revocationListeners) l(recs);
  }

  async withTransaction<T>(fn: (tx: Stores) => Promise<T>): Promise<T> {
    const added: RevocationRecord[] = [];
    const result = await this.db
      .transaction()
      .execute((trx) => fn(bindStores(trx, (r) => added.push(r), this.dialect, this.sqlite)));
    // Only now is it committed: a rolled-back revocation is never announced.
    this.emitRevocations(added);
    return result;
  }

  async migrate(): Promise<string[]> {
    const all = migrations(this.dialect);
    const migrator = new Migrator({ db: this.db, provider: { getMigrations: async () => all } });
    const { error, results } = await migrator.migrateToLatest();
    if (error) throw error instanceof Error ? error : new Error(String(error));
    return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
  }

  private dataVersion: Database.Statement | undefined;
  private controlVersionStmt: Database.Statement | undefined;
  private lastDataVersion = -1;
  private lastControlVersion = -1;
  private eventWriter: SqliteEventWriter | undefined;

  externalChangeMarker(): number | undefined {
    if (!this.sqlite) return undefined;
    // PRAGMA data_version changes when another connection commits (the CLI, or our own event-writer thread); only
    // then read the control_version counter, which triggers bump on writes to keys, revocations, clients, users.
    this.dataVersion ??= this.sqlite.prepare('PRAGMA data_version').pluck();
    const dv = this.dataVersion.get() as number;
    if (dv !== this.lastDataVersion) {
      this.lastDataVersion = dv;
      this.controlVersionStmt ??= this.sqlite
        .prepare("SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'control_version'")
        .pluck();
      this.lastControlVersion = Number(this.controlVersionStmt.get() ?? 0);
    }
    return this.lastControlVersion;
  }

  async controlVersion(): Promise<number> {
    const r = await this.db.selectFrom('meta').select('value').where('key', '=', 'control_version').executeTakeFirst();
    return Number(r?.value ?? 0);
  }

  appendEventsBatch(events: SecurityEvent[]): Promise<void> {
    if (this.sqlite && this.file) {
      this.eventWriter ??= new SqliteEventWriter(this.file);
      return this.eventWriter.appendMany(events);
    }
    return this.withTransaction((tx) => tx.events.appendMany(events));
  }

  async backup(destination: string): Promise<void> {
    if (!this.sqlite) throw new Error('backup of PostgreSQL storage: use pg_dump (and keep the KEK separately)');
    // The SQLite online backup API copies a consistent snapshot while the server keeps running.
    await this.sqlite.backup(destination);
  }

  async ping(): Promise<void> {
    await this.db.selectFrom('meta').select('key').limit(1).execute();
  }

  async close(): Promise<void> {
    await this.eventWriter?.close();
    await this.db.destroy();
  }
}

/** Opens storage for a `sqlite:PATH` or `postgres://…` URL. Does not migrate. */
export function openStorage(url: string): Storage {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (file !== ':memory:') mkdirSync(dirname(resolve(file)), { recursive: true });
    const sqlite = new Database(file === ':memory:' ? ':memory:' : resolve(file));
    sqlite.pragma('journal_mode = WAL');
    // FULL: a commit is on disk before the token that depends on it leaves (group commit amortises the fsync).
    sqlite.pragma('synchronous = FULL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    const db = new Kysely<DB>({ dialect: new SqliteDialect({ database: sqlite }) });
    return new SqlStorage('sqlite', db, sqlite, file === ':memory:' ? undefined : resolve(file));
  }
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    // int8 (ids, epoch milliseconds) as JS numbers: every value we store fits in 2^53.
    types: {
      getTypeParser: (oid: number, format?: 'text' | 'binary') =>
        oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'),
    } as pg.CustomTypesConfig,
  });
  pool.on('error', () => {
    /* idle client errors surface on the next query; do not crash the process */
  });
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return new SqlStorage('postgres', db);
}
