import type { SecurityEvent } from '../../events/catalogue.ts';
import type { ActiveKey } from '../../keys/manager.ts';
import { randomId } from '../../lib/crypto.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { type JwtVerifyContext, verifyOwnJwt } from './own-jwt.ts';

export interface AccessTokenGrant {
  clientId: string;
  sub: string;
  /** The audience: one resource (RFC 8707), or a resource plus this server's userinfo endpoint for OIDC grants. */
  resource: string | string[];
  scopes: string[];
  grantType: string;
  grantId?: string;
  /** The browser session the grant was made in (correlation only: it goes into the event, not the token). */
  sessionId?: string | null;
  /** RFC 9068 §2.2.1: how and when the user authenticated, for tokens issued on a user's behalf. */
  authTime?: number | null;
  acr?: string | null;
  amr?: string[] | null;
  /** RFC 9449 §6.1: the thumbprint of the client's DPoP key; the token then carries cnf.jkt and is a DPoP token. */
  jkt?: string | undefined;
}

export interface IssuedAccessToken {
  access_token: string;
  token_type: 'Bearer' | 'DPoP';
  expires_in: number;
  scope: string;
  jti: string;
  kid: string;
}

/** Access token lifetime in seconds for a resource (its own setting, else tokens.access_token_ttl). */
export function accessTokenTtl(ctx: OAuthContext, resource: string | string[]): number {
  const first = Array.isArray(resource) ? resource[0] : resource;
  const r = ctx.config.resources.find((x) => x.identifier === first);
  return r?.access_token_ttl || ctx.config.tokens.access_token_ttl;
}

/** An access token ready to sign, and the token.issued event that must be durable before it leaves. */
export interface PreparedAccessToken {
  claims: Record<string, unknown>;
  event: SecurityEvent;
  signer: ActiveKey;
  ttl: number;
  scope: string;
  jti: string;
  /** Bound to a DPoP key (token_type DPoP, RFC 9449 §5). */
  dpop: boolean;
}

/** Builds the RFC 9068 claims and the token.issued event (no I/O). */
export function prepareAccessToken(ctx: OAuthContext, grant: AccessTokenGrant, meta: RequestMeta): PreparedAccessToken {
  const nowMs = ctx.clock.nowMs();
  const iat = Math.floor(nowMs / 1000);
  const ttl = accessTokenTtl(ctx, grant.resource);
  const exp = iat + ttl;
  const jti = randomId();
  const scope = grant.scopes.join(' ');
  const claims: Record<string, unknown> = {
    iss: ctx.config.issuer,
    sub: grant.sub,
    aud: grant.resource,
    client_id: grant.clientId,
    scope,
    jti,
    iat,
    exp,
  };
  if (grant.grantId) claims.grant_id = grant.grantId;
  if (typeof grant.authTime === 'number') claims.auth_time = Math.floor(grant.authTime / 1000);
  if (grant.acr) claims.acr = grant.acr;
  if (grant.amr?.length) claims.amr = grant.amr;
  if (grant.jkt) claims.cnf = { jkt: grant.jkt };
  const signer = ctx.keys.current();
  const event: SecurityEvent = {
    type: 'token.issued',
    at: nowMs,
    ...correlation(meta),
    session_id: grant.sessionId ?? meta.sessionId ?? null,
    client_id: grant.clientId,
    subject: grant.sub,
    jti,
    grant_id: grant.grantId ?? null,
    data: { token_type: 'access_token', grant_type: grant.grantType, aud: grant.resource, scope, exp, kid: signer.kid },
  };
  if (grant.jkt) event.data.jkt = grant.jkt;
  return { claims, event, signer, ttl, scope, jti, dpop: !!grant.jkt };
}

/** Signs a prepared token (on the signer pool). The caller makes its event durable before releasing it. */
export async function signAccessToken(ctx: OAuthContext, p: PreparedAccessToken): Promise<IssuedAccessToken> {
  const signed = await ctx.keys.signJwt('at+jwt', p.claims, p.signer);
  return {
    access_token: signed.token,
    token_type: p.dpop ? 'DPoP' : 'Bearer',
    expires_in: p.ttl,
    scope: p.scope,
    jti: p.jti,
    kid: signed.kid,
  };
}

/**
 * Issues an RFC 9068 JWT access token whose issuance is the whole state change (client_credentials). The
 * signature and the durable event (group commit) are produced concurrently; the token is released only when both
 * are done. If signing failed after the event was written, the record names a token nobody received: harmless,
 * and the reverse (a token without its record) cannot happen. Grants that change other state in the same step
 * (code redemption, refresh rotation) use prepareAccessToken + signAccessToken and append the event in their
 * transaction instead.
 */
export async function issueAccessToken(
  ctx: OAuthContext,
  grant: AccessTokenGrant,
  meta: RequestMeta,
): Promise<IssuedAccessToken> {
  const p = prepareAccessToken(ctx, grant, meta);
  const [issued] = await Promise.all([signAccessToken(ctx, p), ctx.events.write(p.event)]);
  return issued;
}

export interface VerifiedAccessToken {
  header: { alg: string; kid: string; typ: string };
  claims: {
    iss: string;
    sub: string;
    aud: string | string[];
    client_id: string;
    scope?: string;
    jti: string;
    iat: number;
    exp: number;
    nbf?: number;
    grant_id?: string;
    [k: string]: unknown;
  };
}

/**
 * Verifies a token we issued: one of our JWTs (see verifyOwnJwt) with typ at+jwt and the RFC 9068 claims. Returns
 * undefined for anything that is not one of our access tokens. Does not check exp or revocation: callers decide
 * (revocation accepts expired tokens, introspection does not).
 */
export function verifyOwnAccessToken(ctx: JwtVerifyContext, token: string): VerifiedAccessToken | undefined {
  const v = verifyOwnJwt(ctx, token, (typ) => typ === 'at+jwt');
  if (!v) return undefined;
  const c = v.claims;
  if (typeof c.jti !== 'string' || typeof c.exp !== 'number' || typeof c.iat !== 'number') return undefined;
  if (typeof c.client_id !== 'string' || typeof c.sub !== 'string') return undefined;
  return v as unknown as VerifiedAccessToken;
}

/** Whether a verified access token is covered by a revocation (by jti, grant, client, subject or signing key). */
export function isRevoked(ctx: OAuthContext, v: VerifiedAccessToken): boolean {
  const c = v.claims;
  return (
    ctx.revocations.check({
      jti: c.jti,
      iat: c.iat,
      client_id: c.client_id,
      sub: c.sub,
      kid: v.header.kid,
      grant_id: c.grant_id,
    }) !== undefined
  );
}
