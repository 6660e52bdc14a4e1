import type { OAuthContext } from '../context.ts';
import { verifyOwnJwt } from './own-jwt.ts';

export interface IdTokenHint {
  sub: string;
  /** Audiences (the client ids the ID token was issued to). */
  aud: string[];
  sid: string | undefined;
}

/**
 * Verifies an id_token_hint (OIDC RP-Initiated Logout §2): an ID token this server signed (typ JWT or absent, never
 * an access token) with our issuer. Expiry is not checked: the hint is usually an expired ID token, and it only
 * identifies the session and client.
 */
export function verifyIdTokenHint(ctx: OAuthContext, token: string): IdTokenHint | undefined {
  const v = verifyOwnJwt(ctx, token, (typ) => typ === undefined || typ === 'JWT');
  if (!v) return undefined;
  const claims = v.claims;
  if (typeof claims.sub !== 'string') return undefined;
  const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : undefined;
  if (!aud || aud.length === 0 || !aud.every((a) => typeof a === 'string')) return undefined;
  return { sub: claims.sub, aud: aud as string[], sid: typeof claims.sid === 'string' ? claims.sid : undefined };
}
