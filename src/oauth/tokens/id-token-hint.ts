import { createPublicKey, type KeyObject } from 'node:crypto';
import { verifyCompactSignature } from '../../lib/jws.ts';
import type { OAuthContext } from '../context.ts';

export interface IdTokenHint {
  sub: string;
  /** Audiences (the client ids the ID token was issued to). */
  aud: string[];
  sid: string | undefined;
}

const keyCache = new Map<string, KeyObject>();

/**
 * Verifies an id_token_hint (OIDC RP-Initiated Logout §2): an ID token this server signed (a key we publish, alg
 * equal to the key's alg, never an access token: typ must be JWT or absent) with our issuer. Expiry is not checked:
 * the hint is usually an expired ID token, and it only identifies the session and client.
 * Once src/oauth/tokens/id-token.ts exists this can delegate to its verifier.
 */
export function verifyIdTokenHint(ctx: OAuthContext, token: string): IdTokenHint | undefined {
  if (token.length > 8192) return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [h, p, s] = parts as [string, string, string];
  let header: Record<string, unknown>;
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object') return undefined;
  if (header.typ !== undefined && header.typ !== 'JWT') return undefined;
  if (typeof header.kid !== 'string' || typeof header.alg !== 'string') return undefined;
  const jwk = ctx.keys.publicJwk(header.kid);
  if (!jwk || jwk.alg !== header.alg) return undefined;
  let key = keyCache.get(header.kid);
  if (!key) {
    key = createPublicKey({ key: jwk as never, format: 'jwk' });
    keyCache.set(header.kid, key);
  }
  if (!verifyCompactSignature(header.alg, key, Buffer.from(`${h}.${p}`), Buffer.from(s, 'base64url'))) return undefined;
  if (claims.iss !== ctx.config.issuer || typeof claims.sub !== 'string') return undefined;
  const aud = typeof claims.aud === 'string' ? [claims.aud] : Array.isArray(claims.aud) ? claims.aud : undefined;
  if (!aud || aud.length === 0 || !aud.every((a) => typeof a === 'string')) return undefined;
  return { sub: claims.sub, aud: aud as string[], sid: typeof claims.sid === 'string' ? claims.sid : undefined };
}
