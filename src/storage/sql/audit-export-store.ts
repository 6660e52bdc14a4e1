import { type Kysely, type Selectable, sql, type Transaction } from 'kysely';
import type { AuditEventRow, AuditExportStore } from '../ports.ts';
import type { DB } from './tables.ts';

type Q = Kysely<DB> | Transaction<DB>;

/** An events row as the audit log hashes it (numbers normalised; data as the stored text). */
export function toAuditRow(r: Selectable<DB['events']>): AuditEventRow {
  return {
    id: Number(r.id),
    type: r.type,
    at: Number(r.at),
    client_id: r.client_id,
    subject: r.subject,
    jti: r.jti,
    grant_id: r.grant_id,
    request_id: r.request_id,
    actor: r.actor,
    session_id: r.session_id,
    ip: r.ip,
    data: r.data,
    leaf_index: r.leaf_index === null || r.leaf_index === undefined ? null : Number(r.leaf_index),
    leaf_hash: r.leaf_hash ?? null,
  };
}

/** The first key of the two-key advisory lock every export sink takes (the sealer uses a one-key lock). */
const EXPORT_LOCK_CLASS = 739_021;

/** A stable 31-bit number for a sink name (the second key of its advisory lock). */
function sinkLockKey(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h & 0x7fffffff;
}

export function auditExportStore(q: Q, dialect: 'sqlite' | 'postgres'): AuditExportStore {
  return {
    async eventsBy(column, value, limit, types) {
      let s = q.selectFrom('events').selectAll().where(column, '=', value);
      if (types) {
        if (types.length === 0) return [];
        s = s.where('type', 'in', types);
      }
      const rows = await s.orderBy('id').limit(limit).execute();
      return rows.map(toAuditRow);
    },
    async eventsOfType(types, since, limit) {
      if (types.length === 0) return [];
      const rows = await q
        .selectFrom('events')
        .selectAll()
        .where('type', 'in', types)
        .where('at', '>=', since)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map(toAuditRow);
    },
    async cursor(sink) {
      const r = await q
        .selectFrom('audit_export_cursors')
        .select('last_leaf')
        .where('sink', '=', sink)
        .executeTakeFirst();
      return r ? Number(r.last_leaf) : -1;
    },
    async advance(sink, leaf, now) {
      await q
        .insertInto('audit_export_cursors')
        .values({ sink, last_leaf: leaf, updated_at: now })
        .onConflict((oc) =>
          oc
            .column('sink')
            .doUpdateSet({ last_leaf: leaf, updated_at: now })
            .where('audit_export_cursors.last_leaf', '<', leaf),
        )
        .execute();
    },
    async lockExport(sink) {
      if (dialect !== 'postgres') return true;
      const r = await sql<{
        ok: boolean;
      }>`SELECT pg_try_advisory_xact_lock(${EXPORT_LOCK_CLASS}::int, ${sinkLockKey(sink)}::int) AS ok`.execute(q);
      return !!r.rows[0]?.ok;
    },
  };
}
