/**
 * The audit log's hashing, recomputed here independently of src/ (plain SHA-256 with the RFC 9162 prefixes and the
 * entry encoding documented in docs/audit.md), so tests check the server against the specification, not itself.
 */
import { createHash } from 'node:crypto';

/** An events row as read from the database (PostgreSQL returns bigints as strings). */
export interface StoredEventRow {
  id: number | string;
  type: string;
  at: number | string;
  client_id: string | null;
  subject: string | null;
  jti: string | null;
  grant_id: string | null;
  session_id: string | null;
  ip: string | null;
  request_id: string | null;
  actor: string | null;
  data: string;
  leaf_index: number | string | null;
}

export const sha256 = (...parts: Buffer[]): Buffer => createHash('sha256').update(Buffer.concat(parts)).digest();

/** Leaf hash of a stored event: SHA-256(0x00 || entry), entry = the version-1 JSON array of its columns. */
export function leafOf(r: StoredEventRow): Buffer {
  const entry = JSON.stringify([
    1,
    Number(r.id),
    r.type,
    Number(r.at),
    r.client_id,
    r.subject,
    r.jti,
    r.grant_id,
    r.session_id,
    r.ip,
    r.request_id,
    r.actor,
    r.data,
  ]);
  return sha256(Buffer.from([0]), Buffer.from(entry));
}

/** MTH over leaf hashes (RFC 9162 §2.1.1). */
export function mth(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return sha256();
  if (leaves.length === 1) return leaves[0] as Buffer;
  let k = 1;
  while (k * 2 < leaves.length) k *= 2;
  return sha256(Buffer.from([1]), mth(leaves.slice(0, k)), mth(leaves.slice(k)));
}
