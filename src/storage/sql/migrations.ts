import { type Kysely, sql } from 'kysely';
import type { Migration } from 'kysely/migration';
import { eventLeafHash } from '../../audit/entry.ts';
import type { DB } from './tables.ts';

/**
 * Versioned migrations, applied in name order at start and by `portcullis migrate`. Never edit a released one:
 * add a new file-level entry instead. `dialect` picks the few types that differ.
 */
export function migrations(dialect: 'sqlite' | 'postgres'): Record<string, Migration> {
  const bigint = dialect === 'postgres' ? 'bigint' : 'integer';
  // SQLite: INTEGER PRIMARY KEY AUTOINCREMENT never reuses ids, so event ids are monotonic even after deletes.
  const serial = (b: import('kysely').ColumnDefinitionBuilder) =>
    dialect === 'postgres' ? b.primaryKey().generatedAlwaysAsIdentity() : b.primaryKey().autoIncrement();
  return {
    '0001_initial': {
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('clients')
          .addColumn('client_id', 'text', (c) => c.primaryKey())
          .addColumn('client_name', 'text')
          .addColumn('secret_hash', 'text')
          .addColumn('token_endpoint_auth_method', 'text', (c) => c.notNull())
          .addColumn('token_endpoint_auth_signing_alg', 'text')
          .addColumn('grant_types', 'text', (c) => c.notNull())
          .addColumn('redirect_uris', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('resources', 'text', (c) => c.notNull())
          .addColumn('jwks', 'text')
          .addColumn('jwks_uri', 'text')
          .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('users')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('username', 'text', (c) => c.notNull().unique())
          .addColumn('password_hash', 'text')
          .addColumn('email', 'text')
          .addColumn('name', 'text')
          .addColumn('disabled', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('source', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('signing_keys')
          .addColumn('kid', 'text', (c) => c.primaryKey())
          .addColumn('alg', 'text', (c) => c.notNull())
          .addColumn('state', 'text', (c) => c.notNull())
          .addColumn('public_jwk', 'text', (c) => c.notNull())
          .addColumn('private_enc', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('activates_at', bigint, (c) => c.notNull())
          .addColumn('deactivated_at', bigint)
          .addColumn('retire_at', bigint)
          .addColumn('revoked_at', bigint)
          .execute();
        await db.schema
          .createTable('revocations')
          .addColumn('id', bigint, serial)
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('value', 'text', (c) => c.notNull())
          .addColumn('revoked_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addColumn('reason', 'text')
          .execute();
        await db.schema.createIndex('revocations_kind_value').on('revocations').columns(['kind', 'value']).execute();
        await db.schema.createIndex('revocations_expires_at').on('revocations').column('expires_at').execute();
        await db.schema
          .createTable('used_once')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .execute();
        await db.schema.createIndex('used_once_expires_at').on('used_once').column('expires_at').execute();
        await db.schema
          .createTable('events')
          .addColumn('id', bigint, serial)
          .addColumn('type', 'text', (c) => c.notNull())
          .addColumn('at', bigint, (c) => c.notNull())
          .addColumn('client_id', 'text')
          .addColumn('subject', 'text')
          .addColumn('jti', 'text')
          .addColumn('grant_id', 'text')
          .addColumn('request_id', 'text')
          .addColumn('actor', 'text')
          .addColumn('data', 'text', (c) => c.notNull())
          .addColumn('leaf_index', bigint)
          .execute();
        await db.schema.createIndex('events_type_at').on('events').columns(['type', 'at']).execute();
        await db.schema.createIndex('events_jti').on('events').column('jti').execute();
        await db.schema
          .createTable('meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .execute();
        // Append-only: the events table refuses UPDATE of anything but leaf_index, and DELETE (defence in depth;
        // the audit issue adds cryptographic sealing on top).
        if (dialect === 'sqlite') {
          await sql`CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END`.execute(
            db,
          );
          await sql`CREATE TRIGGER events_no_update BEFORE UPDATE OF id, type, at, client_id, subject, jti, grant_id, request_id, actor, data ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END`.execute(
            db,
          );
        } else {
          await sql`CREATE FUNCTION portcullis_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.type <> OLD.type OR NEW.at <> OLD.at OR NEW.data <> OLD.data
                 OR NEW.client_id IS DISTINCT FROM OLD.client_id OR NEW.subject IS DISTINCT FROM OLD.subject
                 OR NEW.jti IS DISTINCT FROM OLD.jti OR NEW.grant_id IS DISTINCT FROM OLD.grant_id THEN
                RAISE EXCEPTION 'events are append-only';
              END IF;
              RETURN NEW;
            END $$`.execute(db);
          await sql`CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events FOR EACH ROW EXECUTE FUNCTION portcullis_events_append_only()`.execute(
            db,
          );
        }
      },
    },
    '0002_control_version': {
      // A counter bumped by every write to the control plane (keys, revocations, clients, users). SQLite nodes
      // compare it, cheaply, to notice writes by other processes (the CLI) without reacting to event inserts.
      async up(db: Kysely<unknown>) {
        await sql`INSERT INTO meta (key, value) VALUES ('control_version', '0')`.execute(db);
        if (dialect !== 'sqlite') return;
        for (const table of ['signing_keys', 'revocations', 'clients', 'users']) {
          for (const op of ['INSERT', 'UPDATE', 'DELETE']) {
            await sql
              .raw(
                `CREATE TRIGGER ${table}_${op.toLowerCase()}_bump AFTER ${op} ON ${table} BEGIN UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'control_version'; END`,
              )
              .execute(db);
          }
        }
      },
    },
    '0003_control_version_postgres': {
      // PostgreSQL gets the same control_version counter, so every node notices a CLI's or another node's key
      // rotation or revocation with one cheap query instead of waiting for a poll.
      async up(db: Kysely<unknown>) {
        if (dialect !== 'postgres') return;
        await sql`CREATE FUNCTION portcullis_bump_control_version() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            UPDATE meta SET value = (CAST(value AS bigint) + 1)::text WHERE key = 'control_version';
            RETURN NULL;
          END $$`.execute(db);
        for (const table of ['signing_keys', 'revocations', 'clients', 'users']) {
          await sql
            .raw(
              `CREATE TRIGGER ${table}_bump_control_version AFTER INSERT OR UPDATE OR DELETE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION portcullis_bump_control_version()`,
            )
            .execute(db);
        }
      },
    },
    '0004_sign_in': {
      // Issue 3: people sign in. Every credential-like value (session cookie, code, refresh token, device code,
      // request_uri) is stored as the SHA-256 hex of the random value handed out; the raw value never touches disk.
      async up(db: Kysely<unknown>) {
        await db.schema
          .alterTable('clients')
          .addColumn('post_logout_redirect_uris', 'text', (c) => c.notNull().defaultTo('[]'))
          .execute();
        await db.schema
          .alterTable('clients')
          .addColumn('require_pushed_authorization_requests', 'integer', (c) => c.notNull().defaultTo(0))
          .execute();
        // Display and policy metadata (RFC 7591 names: logo_uri, client_uri, policy_uri, tos_uri, ...), JSON.
        await db.schema
          .alterTable('clients')
          .addColumn('metadata', 'text', (c) => c.notNull().defaultTo('{}'))
          .execute();
        await db.schema
          .createTable('sessions')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('user_id', 'text')
          .addColumn('auth_time', bigint)
          .addColumn('amr', 'text', (c) => c.notNull())
          .addColumn('acr', 'text')
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('last_seen_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addColumn('ended_at', bigint)
          .addColumn('ended_reason', 'text')
          .execute();
        await db.schema.createIndex('sessions_user_id').on('sessions').column('user_id').execute();
        await db.schema.createIndex('sessions_expires_at').on('sessions').column('expires_at').execute();
        await db.schema
          .createTable('grants')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('resources', 'text', (c) => c.notNull())
          .addColumn('session_id', 'text')
          .addColumn('auth_time', bigint)
          .addColumn('acr', 'text')
          .addColumn('amr', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('revoked_at', bigint)
          .addColumn('revoked_reason', 'text')
          .execute();
        await db.schema.createIndex('grants_user_client').on('grants').columns(['user_id', 'client_id']).execute();
        await db.schema
          .createTable('authorization_codes')
          .addColumn('code_hash', 'text', (c) => c.primaryKey())
          .addColumn('grant_id', 'text', (c) => c.notNull())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('redirect_uri', 'text', (c) => c.notNull())
          .addColumn('code_challenge', 'text', (c) => c.notNull())
          .addColumn('code_challenge_method', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('resources', 'text', (c) => c.notNull())
          .addColumn('nonce', 'text')
          .addColumn('auth_time', bigint, (c) => c.notNull())
          .addColumn('acr', 'text')
          .addColumn('amr', 'text', (c) => c.notNull())
          .addColumn('session_id', 'text')
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addColumn('redeemed_at', bigint)
          .execute();
        await db.schema
          .createIndex('authorization_codes_expires_at')
          .on('authorization_codes')
          .column('expires_at')
          .execute();
        await db.schema
          .createTable('refresh_tokens')
          .addColumn('token_hash', 'text', (c) => c.primaryKey())
          .addColumn('grant_id', 'text', (c) => c.notNull())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('resources', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('idle_expires_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addColumn('rotated_at', bigint)
          .addColumn('replaced_by', 'text')
          .execute();
        await db.schema.createIndex('refresh_tokens_grant_id').on('refresh_tokens').column('grant_id').execute();
        await db.schema.createIndex('refresh_tokens_expires_at').on('refresh_tokens').column('expires_at').execute();
        await db.schema
          .createTable('consents')
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('resources', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .addPrimaryKeyConstraint('consents_pk', ['user_id', 'client_id'])
          .execute();
        await db.schema
          .createTable('authorization_requests')
          .addColumn('id_hash', 'text', (c) => c.primaryKey())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('params', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addColumn('used_at', bigint)
          .execute();
        await db.schema
          .createIndex('authorization_requests_expires_at')
          .on('authorization_requests')
          .column('expires_at')
          .execute();
        await db.schema
          .createTable('device_codes')
          .addColumn('device_code_hash', 'text', (c) => c.primaryKey())
          .addColumn('user_code', 'text', (c) => c.notNull().unique())
          .addColumn('client_id', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('resources', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('interval_s', 'integer', (c) => c.notNull())
          .addColumn('last_poll_at', bigint)
          .addColumn('user_id', 'text')
          .addColumn('session_id', 'text')
          .addColumn('auth_time', bigint)
          .addColumn('acr', 'text')
          .addColumn('amr', 'text')
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .addColumn('decided_at', bigint)
          .addColumn('redeemed_at', bigint)
          .execute();
        await db.schema.createIndex('device_codes_expires_at').on('device_codes').column('expires_at').execute();
      },
    },
    '0005_account_guard': {
      // Issue 4: consecutive failed sign-ins per account and the lock they lead to (NIST SP 800-63B-4 §3.2.2). A
      // table of its own, not columns of users: users carries the control_version triggers, and a failed login must
      // not make every node reload its keys and clients.
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('account_guard')
          .addColumn('user_id', 'text', (c) => c.primaryKey())
          .addColumn('failures', 'integer', (c) => c.notNull())
          .addColumn('last_failure_at', bigint, (c) => c.notNull())
          .addColumn('locked_until', bigint)
          .execute();
      },
    },
    '0006_mfa': {
      // Issue 4: second factors (NIST SP 800-63B-4 §3.1.4 look-up secrets, §3.1.7 OTP, §3.1.7/§3.2.5 WebAuthn).
      async up(db: Kysely<unknown>) {
        await db.schema
          .createTable('mfa_totp')
          .addColumn('user_id', 'text', (c) => c.primaryKey())
          .addColumn('secret_enc', 'text', (c) => c.notNull())
          .addColumn('confirmed', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('last_step', bigint, (c) => c.notNull().defaultTo(0))
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('confirmed_at', bigint)
          .addColumn('last_used_at', bigint)
          .execute();
        await db.schema
          .createTable('webauthn_credentials')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('public_key', 'text', (c) => c.notNull())
          .addColumn('counter', bigint, (c) => c.notNull())
          .addColumn('transports', 'text', (c) => c.notNull())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('last_used_at', bigint)
          .execute();
        await db.schema
          .createIndex('webauthn_credentials_user_id')
          .on('webauthn_credentials')
          .column('user_id')
          .execute();
        await db.schema
          .createTable('recovery_codes')
          .addColumn('user_id', 'text', (c) => c.notNull())
          .addColumn('code_hash', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('used_at', bigint)
          .addPrimaryKeyConstraint('recovery_codes_pk', ['user_id', 'code_hash'])
          .execute();
        await db.schema
          .createTable('mfa_failures')
          .addColumn('user_id', 'text', (c) => c.primaryKey())
          .addColumn('failures', 'integer', (c) => c.notNull())
          .addColumn('window_start', bigint, (c) => c.notNull())
          .addColumn('locked_until', bigint)
          .execute();
        await db.schema
          .createTable('mfa_challenges')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('challenge', 'text', (c) => c.notNull())
          .addColumn('expires_at', bigint, (c) => c.notNull())
          .execute();
      },
    },
    '0007_dpop': {
      // Issue 5: a public client's refresh tokens are bound to its DPoP key (RFC 9449 §5); null for unbound ones.
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('refresh_tokens').addColumn('jkt', 'text').execute();
      },
    },
    '0008_revocation_notify': {
      // The revocation bus on PostgreSQL: every committed revocation is NOTIFYed by a trigger, so it reaches every
      // listening node exactly when its transaction commits, whoever wrote it (a node, the CLI, psql). A payload
      // that could exceed NOTIFY's 8000-byte limit carries only the id (the node then reads the table): a
      // revocation must never fail because its notification would be too long. Writes to keys, clients and users
      // notify too, so listening nodes stop polling control_version per request.
      async up(db: Kysely<unknown>) {
        if (dialect !== 'postgres') return;
        await sql`CREATE FUNCTION portcullis_notify_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
          DECLARE payload text;
          BEGIN
            payload := json_build_object('id', NEW.id, 'kind', NEW.kind, 'value', NEW.value,
              'revoked_at', NEW.revoked_at, 'expires_at', NEW.expires_at, 'reason', NEW.reason)::text;
            IF octet_length(payload) > 7000 THEN
              payload := json_build_object('id', NEW.id)::text;
            END IF;
            PERFORM pg_notify('portcullis_revocation', payload);
            RETURN NULL;
          END $$`.execute(db);
        await sql`CREATE TRIGGER revocations_notify AFTER INSERT ON revocations FOR EACH ROW EXECUTE FUNCTION portcullis_notify_revocation()`.execute(
          db,
        );
        await sql`CREATE FUNCTION portcullis_notify_control() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            PERFORM pg_notify('portcullis_control', TG_TABLE_NAME);
            RETURN NULL;
          END $$`.execute(db);
        for (const table of ['signing_keys', 'clients', 'users']) {
          await sql
            .raw(
              `CREATE TRIGGER ${table}_notify_control AFTER INSERT OR UPDATE OR DELETE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION portcullis_notify_control()`,
            )
            .execute(db);
        }
      },
    },
    '0009_code_dpop_jkt': {
      // Issue 5: an authorization code bound to a DPoP key by the dpop_jkt request parameter (RFC 9449 §10).
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('authorization_codes').addColumn('dpop_jkt', 'text').execute();
      },
    },
    '0010_audit_log': {
      // Issue 6: the tamper-evident audit log. Events gain the correlation ids they lacked (session, client IP);
      // the sealer gives each committed event a leaf index once (never changed afterwards) and appends it to an
      // RFC 9162 Merkle tree whose signed checkpoints are kept here (and in sinks outside the database). The audit
      // signing key is an Ed25519 key encrypted under the KEK like the token signing keys.
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('events').addColumn('session_id', 'text').execute();
        await db.schema.alterTable('events').addColumn('ip', 'text').execute();
        await db.schema.createIndex('events_leaf_index').unique().on('events').column('leaf_index').execute();
        await db.schema.createIndex('events_grant_id').on('events').column('grant_id').execute();
        await db.schema.createIndex('events_subject').on('events').column('subject').execute();
        await db.schema.createIndex('events_client_id').on('events').column('client_id').execute();
        await db.schema
          .createTable('audit_checkpoints')
          .addColumn('tree_size', bigint, (c) => c.primaryKey())
          .addColumn('root_hash', 'text', (c) => c.notNull())
          .addColumn('at', bigint, (c) => c.notNull())
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('note', 'text', (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('audit_keys')
          .addColumn('key_id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('public_key', 'text', (c) => c.notNull())
          .addColumn('private_key', 'text', (c) => c.notNull())
          .addColumn('created_at', bigint, (c) => c.notNull())
          .addColumn('retired_at', bigint)
          .execute();
        if (dialect === 'sqlite') {
          await sql`CREATE TRIGGER events_no_update_correlation BEFORE UPDATE OF session_id, ip ON events BEGIN SELECT RAISE(ABORT, 'events are append-only'); END`.execute(
            db,
          );
          await sql`CREATE TRIGGER events_leaf_once BEFORE UPDATE OF leaf_index ON events WHEN OLD.leaf_index IS NOT NULL BEGIN SELECT RAISE(ABORT, 'a sealed event keeps its leaf index'); END`.execute(
            db,
          );
          await sql`CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END`.execute(
            db,
          );
          await sql`CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END`.execute(
            db,
          );
        } else {
          await sql`CREATE OR REPLACE FUNCTION portcullis_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.type <> OLD.type OR NEW.at <> OLD.at OR NEW.data <> OLD.data
                 OR NEW.client_id IS DISTINCT FROM OLD.client_id OR NEW.subject IS DISTINCT FROM OLD.subject
                 OR NEW.jti IS DISTINCT FROM OLD.jti OR NEW.grant_id IS DISTINCT FROM OLD.grant_id
                 OR NEW.request_id IS DISTINCT FROM OLD.request_id OR NEW.actor IS DISTINCT FROM OLD.actor
                 OR NEW.session_id IS DISTINCT FROM OLD.session_id OR NEW.ip IS DISTINCT FROM OLD.ip
                 OR (OLD.leaf_index IS NOT NULL AND NEW.leaf_index IS DISTINCT FROM OLD.leaf_index) THEN
                RAISE EXCEPTION 'events are append-only';
              END IF;
              RETURN NEW;
            END $$`.execute(db);
          await sql`CREATE FUNCTION portcullis_checkpoints_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'checkpoints are append-only';
            END $$`.execute(db);
          await sql`CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints FOR EACH ROW EXECUTE FUNCTION portcullis_checkpoints_append_only()`.execute(
            db,
          );
        }
        await sql`INSERT INTO meta (key, value) VALUES ('audit_frontier', '{"size":0,"hashes":[]}')`.execute(db);
      },
    },
    '0011_audit_leaf_hash': {
      // Issue 6: each sealed event keeps its RFC 9162 leaf hash (base64), written by the sealer in the same UPDATE as
      // its leaf index. `audit verify` compares it with the hash recomputed from the row, so a changed column is named
      // exactly (not just bounded by the first checkpoint whose root fails), and proofs read hashes, not rows. Rows
      // sealed before this migration are filled in here. Like leaf_index, it is set once.
      async up(db: Kysely<unknown>) {
        await db.schema.alterTable('events').addColumn('leaf_hash', 'text').execute();
        // The sealer's queue: unsealed events in id order. Partial, so it holds only the backlog (PostgreSQL otherwise
        // sorts every NULL of the leaf_index index on each chunk: O(backlog) per chunk).
        await sql`CREATE INDEX events_unsealed ON events (id) WHERE leaf_index IS NULL`.execute(db);
        const q = db as unknown as Kysely<DB>;
        for (let from = 0; ; ) {
          const rows = await q
            .selectFrom('events')
            .selectAll()
            .where('leaf_index', '>=', from)
            .orderBy('leaf_index')
            .limit(2000)
            .execute();
          if (rows.length === 0) break;
          const values = sql.join(
            rows.map((r) => {
              const hash = eventLeafHash({ ...r, id: Number(r.id), at: Number(r.at), leaf_index: null });
              return sql`(${Number(r.id)}, ${hash.toString('base64')})`;
            }),
          );
          if (dialect === 'postgres')
            await sql`UPDATE events SET leaf_hash = v.hash FROM (VALUES ${values}) AS v(id, hash) WHERE events.id = v.id::bigint`.execute(
              db,
            );
          else
            await sql`UPDATE events SET leaf_hash = v.column2 FROM (VALUES ${values}) AS v WHERE events.id = v.column1`.execute(
              db,
            );
          from = Number(rows.at(-1)?.leaf_index) + 1;
        }
        if (dialect === 'sqlite') {
          await sql`CREATE TRIGGER events_leaf_hash_once BEFORE UPDATE OF leaf_hash ON events WHEN OLD.leaf_hash IS NOT NULL BEGIN SELECT RAISE(ABORT, 'a sealed event keeps its leaf hash'); END`.execute(
            db,
          );
        } else {
          await sql`CREATE OR REPLACE FUNCTION portcullis_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP = 'DELETE' OR NEW.id <> OLD.id OR NEW.type <> OLD.type OR NEW.at <> OLD.at OR NEW.data <> OLD.data
                 OR NEW.client_id IS DISTINCT FROM OLD.client_id OR NEW.subject IS DISTINCT FROM OLD.subject
                 OR NEW.jti IS DISTINCT FROM OLD.jti OR NEW.grant_id IS DISTINCT FROM OLD.grant_id
                 OR NEW.request_id IS DISTINCT FROM OLD.request_id OR NEW.actor IS DISTINCT FROM OLD.actor
                 OR NEW.session_id IS DISTINCT FROM OLD.session_id OR NEW.ip IS DISTINCT FROM OLD.ip
                 OR (OLD.leaf_index IS NOT NULL AND NEW.leaf_index IS DISTINCT FROM OLD.leaf_index)
                 OR (OLD.leaf_hash IS NOT NULL AND NEW.leaf_hash IS DISTINCT FROM OLD.leaf_hash) THEN
                RAISE EXCEPTION 'events are append-only';
              END IF;
              RETURN NEW;
            END $$`.execute(db);
        }
      },
    },
    '0013_audit_retention': {
      // Issue 6 retention: archived events may be deleted below the watermark meta.audit_pruned_below (set by
      // `portcullis audit archive --prune` together with the frontier it resumes from); nothing else may delete.
      async up(db: Kysely<unknown>) {
        await sql`INSERT INTO meta (key, value) VALUES ('audit_pruned_below', '0')`.execute(db);
        if (dialect === 'sqlite') {
          await sql`DROP TRIGGER events_no_delete`.execute(db);
          await sql`CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            WHEN OLD.leaf_index IS NULL
              OR OLD.leaf_index >= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'audit_pruned_below')
            BEGIN SELECT RAISE(ABORT, 'events are append-only'); END`.execute(db);
        } else {
          await sql`CREATE FUNCTION portcullis_events_prunable() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF OLD.leaf_index IS NOT NULL AND OLD.leaf_index <
                   (SELECT value::bigint FROM meta WHERE key = 'audit_pruned_below') THEN
                RETURN OLD;
              END IF;
              RAISE EXCEPTION 'events are append-only';
            END $$`.execute(db);
          await sql`DROP TRIGGER events_append_only ON events`.execute(db);
          await sql`CREATE TRIGGER events_append_only BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION portcullis_events_append_only()`.execute(
            db,
          );
          await sql`CREATE TRIGGER events_prune_only BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION portcullis_events_prunable()`.execute(
            db,
          );
        }
      },
    },
    '0012_audit_export': {
      // Issue 6: timelines select events by client IP and by browser session; each export sink keeps the last leaf
      // index its receiver acknowledged, moved forward only after the acknowledgement (src/audit/export.ts).
      async up(db: Kysely<unknown>) {
        await db.schema.createIndex('events_ip').on('events').column('ip').execute();
        await db.schema.createIndex('events_session_id').on('events').column('session_id').execute();
        await db.schema
          .createTable('audit_export_cursors')
          .addColumn('sink', 'text', (c) => c.primaryKey())
          .addColumn('last_leaf', bigint, (c) => c.notNull())
          .addColumn('updated_at', bigint, (c) => c.notNull())
          .execute();
      },
    },
  };
}
