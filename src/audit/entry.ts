import type { AuditEventRow } from '../storage/ports.ts';
import { leafHash } from './merkle.ts';

/**
 * The canonical encoding of an event as a Merkle tree entry: a JSON array with a version tag and every stored column
 * in a fixed order, `data` as the exact stored JSON text. Any change to any column (or to the event's id) changes
 * the entry, hence the leaf hash, hence every root after it. Version 1.
 */
export function auditEntry(e: AuditEventRow): string {
  return JSON.stringify([
    1,
    e.id,
    e.type,
    e.at,
    e.client_id,
    e.subject,
    e.jti,
    e.grant_id,
    e.session_id,
    e.ip,
    e.request_id,
    e.actor,
    e.data,
  ]);
}

export function eventLeafHash(e: AuditEventRow): Buffer {
  return leafHash(auditEntry(e));
}
