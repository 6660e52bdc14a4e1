import { InsufficientScope, InvalidRequest, InvalidToken } from '../../errors/oauth-error.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';
import { userinfoAudience } from '../grants/user-tokens.ts';
import { isRevoked, verifyOwnAccessToken } from '../tokens/access-token.ts';

export interface UserinfoInput {
  authorization?: string | undefined;
  /** Form parameters of a POST (RFC 6750 §2.2 allows access_token in the body). */
  params: Readonly<Record<string, string>>;
}

/** RFC 6750 §2.1: `Authorization: Bearer <token>`; §2.2: form parameter; never both (§2: exactly one method). */
function bearerToken(input: UserinfoInput): string {
  const h = input.authorization;
  const fromHeader = h !== undefined && /^bearer\b/i.test(h);
  if (h !== undefined && !fromHeader && input.params.access_token === undefined)
    throw new InvalidToken('use the Bearer authorization scheme', true);
  const fromBody = input.params.access_token;
  if (fromHeader && fromBody !== undefined)
    throw new InvalidRequest('send the access token one way only (RFC 6750 §2)');
  if (fromHeader) {
    const m = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(h ?? '');
    if (!m?.[1]) throw new InvalidToken('malformed Bearer credentials');
    return m[1];
  }
  if (fromBody !== undefined) return fromBody;
  throw new InvalidToken('an access token is required', true);
}

/**
 * OIDC Core §5.3 userinfo: the claims of the user the access token was issued for, limited to what its scopes
 * allow (profile, email). The token must be one of ours, unexpired, unrevoked, meant for userinfo (its aud names
 * the endpoint) and carry openid; the user must still exist and be enabled.
 */
export async function userinfoEndpoint(
  ctx: OAuthContext,
  input: UserinfoInput,
  meta: RequestMeta,
): Promise<Record<string, unknown>> {
  const token = bearerToken(input);
  await ctx.refresh({ force: true });
  if (ctx.storage.externalChangeMarker() === undefined && ctx.revocations.needsPolling) await ctx.revocations.sync();
  const v = verifyOwnAccessToken(ctx, token);
  if (!v) throw new InvalidToken('the access token is not valid');
  const c = v.claims;
  const now = Math.floor(ctx.clock.nowMs() / 1000);
  if (c.exp <= now) throw new InvalidToken('the access token has expired');
  if (isRevoked(ctx, v)) throw new InvalidToken('the access token was revoked');
  // RFC 9449 §7.1: a DPoP-bound token is never accepted as a bearer token (that would undo the binding). This
  // endpoint takes bearer tokens only; DPoP-bound tokens are for the gateway's DPoP-checking routes.
  if (c.cnf !== undefined)
    throw new InvalidToken('the access token is DPoP-bound and cannot be used as a Bearer token');
  const auds = Array.isArray(c.aud) ? c.aud : [c.aud];
  if (!auds.includes(userinfoAudience(ctx))) throw new InvalidToken('the access token is not meant for userinfo');
  const scopes = new Set((c.scope ?? '').split(' '));
  if (!scopes.has('openid')) throw new InsufficientScope('the access token lacks the openid scope', 'openid');
  const user = await ctx.storage.users.getById(c.sub);
  if (!user || user.disabled) throw new InvalidToken('the user of this access token is no longer active');
  const claims: Record<string, unknown> = { sub: user.id };
  if (scopes.has('profile')) {
    claims.preferred_username = user.username;
    if (user.name) claims.name = user.name;
    claims.updated_at = Math.floor(user.updated_at / 1000);
  }
  if (scopes.has('email') && user.email) {
    claims.email = user.email;
    // Portcullis does not verify addresses, so it never claims they are verified.
    claims.email_verified = false;
  }
  ctx.log.debug({ request_id: meta.requestId, sub: user.id, client_id: c.client_id }, 'userinfo');
  return claims;
}
