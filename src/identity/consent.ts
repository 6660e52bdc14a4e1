import { correlation, type OAuthContext, type RequestMeta } from '../oauth/context.ts';
import { revokeUserGrants } from '../oauth/grant-revocation.ts';

/**
 * Withdraws a user's consent for a client and revokes every grant the user gave that client (its refresh tokens
 * stop working and its access tokens fail introspection at once), with the events, in one transaction.
 */
export async function withdrawConsent(
  ctx: OAuthContext,
  userId: string,
  clientId: string,
  meta: RequestMeta,
  maxTokenLifetimeSeconds: number,
): Promise<{ withdrawn: boolean; grantsRevoked: number }> {
  const now = ctx.clock.nowMs();
  return ctx.storage.withTransaction(async (tx) => {
    const withdrawn = await tx.consents.withdraw(userId, clientId);
    const grants = await revokeUserGrants(tx, userId, {
      at: now,
      reason: 'consent_withdrawn',
      actor: userId,
      expiresAt: now + maxTokenLifetimeSeconds * 1000,
      meta,
      clientId,
    });
    if (withdrawn || grants.length)
      await tx.events.append({
        type: 'consent.withdrawn',
        at: now,
        client_id: clientId,
        subject: userId,
        ...correlation(meta),
        data: { grants_revoked: grants.length },
      });
    return { withdrawn, grantsRevoked: grants.length };
  });
}
