import { createPublicKey, type KeyObject } from 'node:crypto';
import { randomId } from '../../lib/crypto.ts';
import { verifyCompactSignature } from '../../lib/jws.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';

export interface AccessTokenGrant {
  clientId: string;
  sub: string;
  resource: string;
  scopes: string[];
  grantType: string;
  grantId?: string;
}

export interface IssuedAccessToken {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
  jti: string;
  kid: string;
}

/** Access token lifetime in seconds for a resource (its own setting, else tokens.access_token_ttl). */
export function accessTokenTtl(ctx: OAuthContext, resource: string): number {
  const r = ctx.config.resources.find((x) => x.identifier === resource);
  return r?.access_token_ttl || ctx.config.tokens.access_token_ttl;
}

/**
 * Issues an RFC 9068 JWT access token. The token leaves only after its token.issued event is durable
 * (group commit): no token without its record.
 */
export async function issueAccessToken(
  ctx: OAuthContext,
  grant: AccessTokenGrant,
  meta: RequestMeta,
): Promise<IssuedAccessToken> {
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
  const signer = ctx.keys.current();
  const kid = signer.kid;
  // The signature and the durable event are produced concurrently; the token is released only when both are done.
  // If signing failed after the event was written, the record names a token nobody received: harmless, and the
  // reverse (a token without its record) cannot happen.
  const [signed] = await Promise.all([
    ctx.keys.signJwt('at+jwt', claims, signer),
    ctx.events.write({
      type: 'token.issued',
      at: nowMs,
      request_id: meta.requestId,
      client_id: grant.clientId,
      subject: grant.sub,
      jti,
      grant_id: grant.grantId ?? null,
      data: { token_type: 'access_token', grant_type: grant.grantType, aud: grant.resource, scope, exp, kid },
    }),
  ]);
  return { access_token: signed.token, token_type: 'Bearer', expires_in: ttl, scope, jti, kid: signed.kid };
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

const publicKeys = new Map<string, KeyObject>();

/**
 * Verifies a token we issued: signature by a key we publish (kid only from our own key set; alg must equal the
 * key's alg), typ at+jwt, iss. Returns undefined for anything that is not one of our access tokens. Does not check
 * exp or revocation: callers decide (revocation accepts expired tokens, introspection does not).
 */
export function verifyOwnAccessToken(ctx: OAuthContext, token: string): VerifiedAccessToken | undefined {
  if (token.length > 8192) return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [h, p, s] = parts as [string, string, string];
  let header: VerifiedAccessToken['header'];
  let claims: VerifiedAccessToken['claims'];
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object') return undefined;
  if (header.typ !== 'at+jwt' || typeof header.kid !== 'string') return undefined;
  const jwk = ctx.keys.publicJwk(header.kid);
  if (!jwk || jwk.alg !== header.alg) return undefined;
  let key = publicKeys.get(header.kid);
  if (!key) {
    key = createPublicKey({ key: jwk as never, format: 'jwk' });
    publicKeys.set(header.kid, key);
  }
  if (!verifyCompactSignature(header.alg, key, Buffer.from(`${h}.${p}`), Buffer.from(s, 'base64url'))) return undefined;
  if (claims.iss !== ctx.config.issuer || typeof claims.jti !== 'string' || typeof claims.exp !== 'number')
    return undefined;
  if (typeof claims.iat !== 'number' || typeof claims.client_id !== 'string' || typeof claims.sub !== 'string')
    return undefined;
  return { header, claims };
}
