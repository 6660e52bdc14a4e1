import { InvalidDpopProof, InvalidGrant, InvalidRequest } from '../../errors/oauth-error.ts';
import { sha256Hex } from '../../lib/crypto.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import type { GrantDpop, TokenResponse } from './client-credentials.ts';
import { buildUserTokens, narrowScopes, refreshRef, revokeOnReplay } from './user-tokens.ts';

const reuse = (hash: string) =>
  ({ type: 'refresh_token.reused', reason: 'refresh_token_reused', data: { ref: refreshRef(hash) } }) as const;

/**
 * RFC 6749 §6 with rotation (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2). Every use spends the token and returns a new one
 * of the same family (the grant). Presenting a spent token means two parties hold it: the whole grant is revoked,
 * its access tokens included. Rotation is a compare-and-swap in the transaction that records the new tokens, so of
 * concurrent refreshes with one token at most one succeeds (the others count as reuse).
 */
export async function refreshTokenGrant(
  ctx: OAuthContext,
  client: ClientRecord,
  params: Readonly<Record<string, string>>,
  meta: RequestMeta,
  dpop?: GrantDpop,
): Promise<TokenResponse> {
  const value = params.refresh_token;
  if (!value) throw new InvalidRequest('refresh_token is required');
  if (!client.grant_types.includes('refresh_token'))
    throw new InvalidGrant('this client is not registered for the refresh_token grant');
  const hash = sha256Hex(value);
  const rec = await ctx.storage.refreshTokens.get(hash);
  if (!rec) throw new InvalidGrant('the refresh token is invalid');
  // Bound to its client (RFC 6749 §6): another client's token is refused without touching the family.
  if (rec.client_id !== client.client_id) throw new InvalidGrant('the refresh token was issued to another client');
  if (rec.rotated_at !== null) return revokeOnReplay(ctx, rec.grant_id, meta, reuse(hash));
  // RFC 9449 §5: a bound refresh token is usable only with a proof made with its key. Refused without touching the
  // family: the holder of the key still has a good token, and a thief without the key gains nothing by trying.
  if (rec.jkt !== null) {
    if (!dpop) throw new InvalidDpopProof('this refresh token is DPoP-bound: a DPoP proof with its key is required');
    if (dpop.jkt !== rec.jkt) throw new InvalidGrant('the refresh token is bound to another DPoP key');
  }
  const now = ctx.clock.nowMs();
  const grant = await ctx.storage.grants.get(rec.grant_id);
  if (!grant || grant.revoked_at !== null) throw new InvalidGrant('the grant was revoked');
  if (now >= rec.expires_at) throw new InvalidGrant('the refresh token has expired (absolute lifetime)');
  if (now >= rec.idle_expires_at) throw new InvalidGrant('the refresh token has expired (unused for too long)');
  const user = await ctx.storage.users.getById(grant.user_id);
  if (!user || user.disabled) throw new InvalidGrant('the user is disabled');

  const granted = rec.scope.split(' ').filter(Boolean);
  const scopes = narrowScopes(granted, params.scope);
  const tokens = await buildUserTokens(
    ctx,
    {
      client,
      grant,
      grantType: 'refresh_token',
      scopes,
      resource: params.resource,
      jkt: dpop?.jkt,
      refresh: { absoluteExpiresAt: rec.expires_at },
    },
    meta,
  );
  const next = tokens.refresh!;
  const outcome = await ctx.storage.withTransaction(async (tx) => {
    const r = await tx.refreshTokens.rotate(hash, next, ctx.clock.nowMs());
    if (r.status === 'reused') return 'reused' as const;
    if (r.status === 'not_found') return 'not_found' as const;
    await tx.events.append({
      type: 'refresh_token.rotated',
      at: ctx.clock.nowMs(),
      ...correlation(meta),
      session_id: grant.session_id,
      client_id: client.client_id,
      subject: grant.user_id,
      grant_id: grant.id,
      data: { from: refreshRef(hash), to: refreshRef(next.token_hash), scope: scopes.join(' ') },
    });
    // refresh_token.rotated names the new token; its own refresh_token.issued would only repeat it.
    for (const e of tokens.events) if (e.type !== 'refresh_token.issued') await tx.events.append(e);
    return 'ok' as const;
  });
  if (outcome === 'reused') return revokeOnReplay(ctx, rec.grant_id, meta, reuse(hash));
  if (outcome === 'not_found') throw new InvalidGrant('the refresh token is invalid');
  return tokens.response;
}
