import { randomId, randomToken, sha256Hex } from '../../lib/crypto.ts';
import type { AuthorizationCodeRecord, GrantRecord, SessionRecord, Stores } from '../../storage/ports.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { withQuery } from './redirect-uri.ts';
import type { AuthorizationRequest } from './request.ts';

/**
 * Issues an authorization code: a new grant (the family of every token that will come from this authorization)
 * and the code, stored as SHA-256 of 256 random bits, each with its event, in the caller's transaction.
 * Returns the authorization response URL: code, state and iss (RFC 9207 §2).
 */
export async function issueAuthorizationCode(
  ctx: OAuthContext,
  tx: Stores,
  req: AuthorizationRequest,
  session: SessionRecord & { user_id: string; auth_time: number },
  meta: RequestMeta,
): Promise<{ location: string; code: AuthorizationCodeRecord; grant: GrantRecord }> {
  const now = ctx.clock.nowMs();
  const grant: GrantRecord = {
    id: randomId(),
    user_id: session.user_id,
    client_id: req.client.client_id,
    scope: req.scopes.join(' '),
    resources: req.resources,
    session_id: session.id,
    auth_time: session.auth_time,
    acr: session.acr,
    amr: session.amr,
    created_at: now,
    revoked_at: null,
    revoked_reason: null,
  };
  const value = randomToken(32);
  const code: AuthorizationCodeRecord = {
    code_hash: sha256Hex(value),
    grant_id: grant.id,
    client_id: req.client.client_id,
    user_id: session.user_id,
    redirect_uri: req.redirectUri,
    code_challenge: req.codeChallenge,
    code_challenge_method: 'S256',
    scope: grant.scope,
    resources: req.resources,
    nonce: req.nonce ?? null,
    auth_time: session.auth_time,
    acr: session.acr,
    amr: session.amr,
    session_id: session.id,
    created_at: now,
    expires_at: now + ctx.config.authorization.code_ttl * 1000,
    redeemed_at: null,
    dpop_jkt: req.dpopJkt ?? null,
  };
  const base = {
    at: now,
    client_id: grant.client_id,
    subject: grant.user_id,
    grant_id: grant.id,
    ...correlation(meta),
    session_id: session.id,
  };
  await tx.grants.insert(grant);
  await tx.events.append({
    ...base,
    type: 'grant.created',
    data: { scope: grant.scope, resources: grant.resources, via: 'authorization_code' },
  });
  await tx.codes.insert(code);
  await tx.events.append({
    ...base,
    type: 'authorization_code.issued',
    data: {
      scope: code.scope,
      resources: code.resources,
      redirect_uri: code.redirect_uri,
      sid: code.session_id,
      expires_at: code.expires_at,
    },
  });
  const location = withQuery(req.redirectUri, { code: value, state: req.state, iss: ctx.config.issuer });
  return { location, code, grant };
}
