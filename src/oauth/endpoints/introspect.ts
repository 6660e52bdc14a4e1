import { InvalidRequest } from '../../errors/oauth-error.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { isRevoked, verifyOwnAccessToken } from '../tokens/access-token.ts';

export type IntrospectionResponse = { active: false } | ({ active: true } & Record<string, unknown>);

/**
 * RFC 7662. The caller must authenticate. A caller learns about a token only when it is the token's own client or
 * the token's audience is one of the caller's resources; otherwise, and for anything invalid, expired or revoked,
 * the answer is exactly {"active": false} (§2.2) so nothing leaks.
 */
export async function introspectionEndpoint(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
): Promise<IntrospectionResponse> {
  const { client } = await authenticateClient(ctx, input, meta, { allowPublic: false });
  const token = input.params.token;
  if (token === undefined || token === '') throw new InvalidRequest('token is required');
  await ctx.refresh({ force: true });
  // Without a cheap change marker (PostgreSQL) and without a live bus, read new revocations now: an emergency
  // revocation made by another node or the CLI must be honoured at once, not after the next poll. While the bus is
  // live it has already brought every committed revocation.
  if (ctx.storage.externalChangeMarker() === undefined && ctx.revocations.needsPolling) await ctx.revocations.sync();
  const inactive = { active: false } as const;
  const v = verifyOwnAccessToken(ctx, token);
  let verdict = 'invalid';
  let result: IntrospectionResponse = inactive;
  if (v) {
    const c = v.claims;
    const now = Math.floor(ctx.clock.nowMs() / 1000);
    const auds = Array.isArray(c.aud) ? c.aud : [c.aud];
    const revoked = isRevoked(ctx, v);
    if (c.exp <= now) verdict = 'expired';
    else if (typeof c.nbf === 'number' && c.nbf > now + ctx.config.tokens.clock_skew) verdict = 'not_yet_valid';
    else if (revoked) verdict = 'revoked';
    else if (c.client_id !== client.client_id && !auds.some((a) => client.resources.includes(a)))
      verdict = 'not_authorized';
    else {
      verdict = 'active';
      result = {
        active: true,
        scope: c.scope ?? '',
        client_id: c.client_id,
        // RFC 9449 §6.2: a DPoP-bound token says so, with its key's thumbprint.
        token_type: c.cnf ? 'DPoP' : 'Bearer',
        exp: c.exp,
        iat: c.iat,
        ...(typeof c.nbf === 'number' ? { nbf: c.nbf } : {}),
        sub: c.sub,
        aud: c.aud,
        iss: c.iss,
        jti: c.jti,
        ...(c.cnf ? { cnf: c.cnf } : {}),
      };
    }
  }
  await ctx.events.write({
    type: 'token.introspected',
    at: ctx.clock.nowMs(),
    ...correlation(meta),
    client_id: client.client_id,
    jti: v?.claims.jti ?? null,
    grant_id: v?.claims.grant_id ?? null,
    data: { active: result.active, verdict },
  });
  return result;
}
