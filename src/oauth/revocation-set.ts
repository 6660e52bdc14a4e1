import type { SecurityEvent } from '../events/catalogue.ts';
import type { RevocationKind, RevocationRecord, Storage, Stores } from '../storage/ports.ts';

export interface RevocationRequest {
  kind: Exclude<RevocationKind, 'kid'>;
  value: string;
  at: number;
  /** When every token the revocation covers has expired (ms): the record can be purged then. */
  expiresAt: number;
  reason: string;
  actor: string;
  /** Extra correlation for the event (the token's client and subject, the request id). */
  event?: Partial<Pick<SecurityEvent, 'client_id' | 'subject' | 'request_id'>> & { data?: Record<string, unknown> };
}

/**
 * Writes a revocation and its token.revoked event in the caller's transaction: the one place tokens are revoked
 * by jti, client or subject (the endpoint, the CLI, later the playbooks).
 */
export async function recordRevocation(tx: Stores, r: RevocationRequest): Promise<RevocationRecord> {
  const rec = await tx.revocations.add({
    kind: r.kind,
    value: r.value,
    revoked_at: r.at,
    expires_at: r.expiresAt,
    reason: r.reason,
  });
  await tx.events.append({
    type: 'token.revoked',
    at: r.at,
    actor: r.actor,
    request_id: r.event?.request_id ?? null,
    jti: r.kind === 'jti' ? r.value : null,
    client_id: r.kind === 'client' ? r.value : (r.event?.client_id ?? null),
    subject: r.kind === 'subject' ? r.value : (r.event?.subject ?? null),
    data: { by: r.kind, reason: r.reason, ...r.event?.data },
  });
  return rec;
}

export interface TokenIdentity {
  jti: string;
  /** Issued-at, seconds. */
  iat: number;
  client_id: string;
  sub: string;
  kid: string;
  grant_id?: string | undefined;
}

/**
 * The live revocation set, held in memory and kept current by tailing the revocations table (and, in later issues,
 * the bus). By jti, grant and kid a token is dead outright; by client and subject, every token issued at or before
 * the revocation is dead, so a re-enabled client or user can get fresh tokens.
 */
export class RevocationSet {
  private readonly byKey = new Map<string, RevocationRecord>();
  private lastId = 0;
  private readonly storage: Storage;

  constructor(storage: Storage) {
    this.storage = storage;
  }

  get size(): number {
    return this.byKey.size;
  }

  private static key(kind: RevocationKind, value: string): string {
    return `${kind}\u0000${value}`;
  }

  add(r: RevocationRecord): void {
    const k = RevocationSet.key(r.kind, r.value);
    const prev = this.byKey.get(k);
    if (!prev || prev.revoked_at < r.revoked_at) this.byKey.set(k, r);
    if (r.id > this.lastId) this.lastId = r.id;
  }

  /** Reads revocations written since the last sync (by this or any other process). */
  async sync(): Promise<number> {
    let n = 0;
    for (;;) {
      const rows = await this.storage.revocations.listAfter(this.lastId, 5000);
      for (const r of rows) this.add(r);
      n += rows.length;
      if (rows.length < 5000) return n;
    }
  }

  purge(nowMs: number): void {
    for (const [k, r] of this.byKey) if (r.expires_at < nowMs) this.byKey.delete(k);
  }

  /** Returns the revocation that kills this token, if any. */
  check(t: TokenIdentity): RevocationRecord | undefined {
    const direct = [
      this.byKey.get(RevocationSet.key('jti', t.jti)),
      this.byKey.get(RevocationSet.key('kid', t.kid)),
      t.grant_id ? this.byKey.get(RevocationSet.key('grant', t.grant_id)) : undefined,
    ].find(Boolean);
    if (direct) return direct;
    for (const r of [
      this.byKey.get(RevocationSet.key('client', t.client_id)),
      this.byKey.get(RevocationSet.key('subject', t.sub)),
    ]) {
      if (r && t.iat * 1000 <= r.revoked_at) return r;
    }
    return undefined;
  }
}
