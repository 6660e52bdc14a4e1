import type { SecurityEvent } from '../events/catalogue.ts';
import type { GrantRecord, Stores } from '../storage/ports.ts';
import { correlation, type RequestMeta } from './context.ts';
import { recordRevocation } from './revocation-set.ts';

export interface GrantRevocation {
  at: number;
  /** code_replayed, refresh_token_reused, consent_withdrawn, user_disabled, ... */
  reason: string;
  actor: string;
  /** When every access token of the grant has expired (ms): the revocation record can be purged then. */
  expiresAt: number;
  /** The request that caused it, if any (correlation columns of the events). */
  meta?: RequestMeta | undefined;
}

/**
 * Revokes a grant in the caller's transaction: marks it revoked (its refresh tokens die with it: the token
 * endpoint checks the grant), adds a `grant` revocation so every node rejects its access tokens at once, and writes
 * grant.revoked. Returns false when it was already revoked (then nothing is written).
 */
export async function revokeGrant(tx: Stores, grant: GrantRecord, r: GrantRevocation): Promise<boolean> {
  if (!(await tx.grants.revoke(grant.id, r.at, r.reason))) return false;
  await recordRevocation(tx, {
    kind: 'grant',
    value: grant.id,
    at: r.at,
    expiresAt: r.expiresAt,
    reason: r.reason,
    actor: r.actor,
    event: { client_id: grant.client_id, subject: grant.user_id, ...correlation(r.meta), session_id: grant.session_id },
  });
  const e: SecurityEvent = {
    type: 'grant.revoked',
    at: r.at,
    actor: r.actor,
    client_id: grant.client_id,
    subject: grant.user_id,
    grant_id: grant.id,
    ...correlation(r.meta),
    // A grant's events carry the session it was made in (the request revoking it may come from another).
    session_id: grant.session_id,
    data: { reason: r.reason },
  };
  await tx.events.append(e);
  return true;
}

/** Revokes every live grant of a user (optionally for one client). Returns the revoked grant ids. */
export async function revokeUserGrants(
  tx: Stores,
  userId: string,
  r: GrantRevocation & { clientId?: string },
): Promise<string[]> {
  const revoked: string[] = [];
  for (const g of await tx.grants.listByUser(userId)) {
    if (g.revoked_at !== null || (r.clientId !== undefined && g.client_id !== r.clientId)) continue;
    if (await revokeGrant(tx, g, r)) revoked.push(g.id);
  }
  return revoked;
}
