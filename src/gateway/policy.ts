import { InsufficientScope, InvalidToken, OAuthError } from '../errors/oauth-error.ts';
import type { GatewayContext } from './context.ts';
import { Denial, type DenialReason, type DeniedTokenFacts } from './denial.ts';
import type { DpopCheck } from './dpop-check.ts';
import { type Route, requiredScopes } from './routes.ts';
import type { Credentials, GatewayToken } from './verify-token.ts';

export function tokenFacts(t: GatewayToken): DeniedTokenFacts {
  return { jti: t.jti, clientId: t.clientId, sub: t.sub, grantId: t.grantId };
}

function invalid(reason: DenialReason, description: string, route: Route, t: GatewayToken): never {
  throw new Denial(reason, new InvalidToken(description, false, route.challenge), tokenFacts(t));
}

export interface RequestFacts {
  method: string;
  /** RFC 9449 §4.3 htu of this request. */
  url: string;
}

/**
 * The per-request checks on a verified token, cheap enough for every request (the signature was checked once,
 * verify-token.ts): lifetime with a small skew (RFC 9068 §4), the signing key still trusted, the revocation set,
 * the audience (RFC 8707: the route's resource), sender constraint (RFC 9449), then the method's scopes
 * (RFC 6750 §3.1: insufficient_scope names what is needed). Throws a Denial. Returns the DPoP proof check still
 * to run (checkDpop) for a DPoP-scheme request.
 */
export function authorizeRequest(
  ctx: GatewayContext,
  route: Route,
  t: GatewayToken,
  cred: Credentials,
  req: RequestFacts,
  nowMs: number,
  skewSeconds: number,
): DpopCheck | undefined {
  const now = nowMs / 1000;
  if (t.exp + skewSeconds <= now) invalid('expired', 'the access token has expired', route, t);
  if ((t.nbf !== undefined && t.nbf - skewSeconds > now) || t.iat - skewSeconds > now)
    invalid('not_yet_valid', 'the access token is not valid yet', route, t);
  if (!ctx.keys.isTrustedKid(t.kid)) invalid('key_not_trusted', 'the access token is not valid', route, t);
  const revoked = ctx.revocations.check({
    jti: t.jti,
    iat: t.iat,
    client_id: t.clientId,
    sub: t.sub,
    kid: t.kid,
    grant_id: t.grantId,
  });
  if (revoked) invalid('revoked', 'the access token was revoked', route, t);
  if (!t.aud.includes(route.resource))
    invalid('wrong_audience', 'the access token is not meant for this API', route, t);

  let dpop: DpopCheck | undefined;
  if (cred.scheme === 'dpop') {
    // The proof itself is checked after these cheap checks, asynchronously (checkDpop: it records the jti).
    dpop = {
      proof: cred.proof,
      method: req.method,
      url: req.url,
      accessToken: cred.token,
      expectedJkt: t.jkt,
      challenge: route.challenge,
      token: tokenFacts(t),
    };
  } else {
    // RFC 9449 §7.2: a DPoP-bound token presented as a plain bearer token is refused (its holder must prove the key).
    if (t.jkt !== undefined)
      invalid('dpop_bound_token_as_bearer', 'this access token is DPoP-bound: use the DPoP scheme', route, t);
    if (route.dpop === 'required') invalid('dpop_required', 'this API requires a DPoP-bound access token', route, t);
  }

  const needed = requiredScopes(route, req.method);
  if (needed === undefined) {
    const allowed = [...route.scopes.keys()].filter((m) => m !== '*');
    throw new Denial(
      'method_not_allowed',
      new OAuthError('invalid_request', 405, `${req.method} is not allowed on this API`, {
        allow: allowed.join(', '),
      }),
      tokenFacts(t),
    );
  }
  for (const s of needed)
    if (!t.scopes.has(s))
      throw new Denial(
        'insufficient_scope',
        new InsufficientScope(`this request needs the scope ${needed.join(' ')}`, needed.join(' '), route.challenge),
        tokenFacts(t),
      );
  return dpop;
}
