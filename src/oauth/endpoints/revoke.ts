import { InvalidRequest } from '../../errors/oauth-error.ts';
import { sha256Hex } from '../../lib/crypto.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { revokeGrant } from '../grant-revocation.ts';
import { maxAccessTokenTtl } from '../grants/user-tokens.ts';
import { recordRevocation } from '../revocation-set.ts';
import { verifyOwnAccessToken } from '../tokens/access-token.ts';

/**
 * RFC 7009. Answers 200 whether or not the token was valid (§2.2) so the endpoint is no token oracle. A client may
 * revoke only tokens issued to it (§2.1); other tokens are left alone and the attempt is logged.
 */
export async function revocationEndpoint(ctx: OAuthContext, input: ClientAuthInput, meta: RequestMeta): Promise<void> {
  const { client } = await authenticateClient(ctx, input, meta, { allowPublic: true });
  const token = input.params.token;
  if (token === undefined || token === '') throw new InvalidRequest('token is required');
  const v = verifyOwnAccessToken(ctx, token);
  if (!v) return revokeRefreshToken(ctx, client.client_id, token, meta);
  const c = v.claims;
  if (c.client_id !== client.client_id) {
    ctx.log.warn(
      { request_id: meta.requestId, client_id: client.client_id, jti: c.jti },
      "revocation of another client's token refused",
    );
    return;
  }
  const now = ctx.clock.nowMs();
  if (c.exp * 1000 + ctx.config.tokens.clock_skew * 1000 < now) return; // already dead
  const rec = await ctx.storage.withTransaction((tx) =>
    recordRevocation(tx, {
      kind: 'jti',
      value: c.jti,
      at: now,
      expiresAt: (c.exp + ctx.config.tokens.clock_skew) * 1000,
      reason: 'revoked by client (RFC 7009)',
      actor: client.client_id,
      event: {
        client_id: client.client_id,
        subject: c.sub,
        grant_id: c.grant_id ?? null,
        ...correlation(meta),
        data: { token_type: 'access_token', exp: c.exp },
      },
    }),
  );
  ctx.revocations.add(rec);
}

/**
 * RFC 7009 §2.1: revoking a refresh token also invalidates the access tokens of the same grant. Portcullis revokes
 * the whole grant: its refresh tokens and, through the grant revocation, its access tokens.
 */
async function revokeRefreshToken(
  ctx: OAuthContext,
  clientId: string,
  token: string,
  meta: RequestMeta,
): Promise<void> {
  if (token.length > 512) return;
  const rec = await ctx.storage.refreshTokens.get(sha256Hex(token));
  if (!rec || rec.client_id !== clientId) return;
  // The grant revocation reaches this node's set at commit (storage.onRevocations), and the others over the bus.
  await ctx.storage.withTransaction(async (tx) => {
    const grant = await tx.grants.get(rec.grant_id);
    if (!grant || grant.revoked_at !== null) return false;
    const now = ctx.clock.nowMs();
    return revokeGrant(tx, grant, {
      at: now,
      reason: 'refresh_token_revoked_by_client',
      actor: clientId,
      expiresAt: now + maxAccessTokenTtl(ctx) * 1000,
      meta,
    });
  });
}
