import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, type Transaction } from 'kysely';
import { Migrator } from 'kysely/migration';
import pg from 'pg';
import type { SecurityEvent, StoredEvent } from '../../events/catalogue.ts';
import type {
  ClientRecord,
  ClientStore,
  EventStore,
  KeyState,
  KeyStore,
  MetaStore,
  ReplayStore,
  RevocationKind,
  RevocationRecord,
  RevocationStore,
  SigningKeyRecord,
  Storage,
  Stores,
  UserRecord,
  UserStore,
} from '../ports.ts';
import { migrations } from './migrations.ts';
import { SqliteEventWriter } from './sqlite-event-writer.ts';
import type { DB } from './tables.ts';

type Q = Kysely<DB> | Transaction<DB>;

const num = (v: unknown): number => (typeof v === 'number' ? v : Number(v));
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

function toClient(r: DB['clients']): ClientRecord {
  return {
    ...r,
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
    data: JSON.stringify(e.data),
    leaf_index: null,
  };
}

/** Every store over one Kysely handle (the pool, or a transaction). */
function bindStores(q: Q): Stores {
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
      return r
        ? { ...r, disabled: !!r.disabled, created_at: num(r.created_at), updated_at: num(r.updated_at) }
        : undefined;
    },
    async list() {
      const rows = await q.selectFrom('users').selectAll().orderBy('username').execute();
      return rows.map((r) => ({
        ...r,
        disabled: !!r.disabled,
        created_at: num(r.created_at),
        updated_at: num(r.updated_at),
      }));
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
      const row = await q.insertInto('revocations').values(r).returningAll().executeTakeFirstOrThrow();
      return toRevocation(row);
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
      // 11 columns per row; stay well under SQLite's 32766 bound parameters per statement.
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
        data: JSON.parse(r.data),
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
  return { clients, users, keys, revocations, replay, events, meta };
}

class SqlStorage implements Storage {
  readonly dialect: 'sqlite' | 'postgres';
  readonly db: Kysely<DB>;
  private readonly sqlite: Database.Database | undefined;
  clients: ClientStore;
  users: UserStore;
  keys: KeyStore;
  revocations: RevocationStore;
  replay: ReplayStore;
  events: EventStore;
  meta: MetaStore;

  private readonly file: string | undefined;

  constructor(dialect: 'sqlite' | 'postgres', db: Kysely<DB>, sqlite?: Database.Database, file?: string) {
    this.file = file;
    this.dialect = dialect;
    this.db = db;
    this.sqlite = sqlite;
    const s = bindStores(db);
    this.clients = s.clients;
    this.users = s.users;
    this.keys = s.keys;
    this.revocations = s.revocations;
    this.replay = s.replay;
    this.events = s.events;
    this.meta = s.meta;
  }

  withTransaction<T>(fn: (tx: Stores) => Promise<T>): Promise<T> {
    return this.db.transaction().execute((trx) => fn(bindStores(trx)));
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
