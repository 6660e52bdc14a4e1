import { createPublicKey, type KeyObject } from 'node:crypto';
import { verifyCompactSignature } from '../../lib/jws.ts';
import type { OAuthContext } from '../context.ts';

export interface OwnJwt {
  header: { alg: string; kid: string; typ?: string; [k: string]: unknown };
  claims: Record<string, unknown>;
}

const publicKeys = new Map<string, KeyObject>();

/** What verification needs: the issuer and the published keys (a gateway running alone has only these). */
export type JwtVerifyContext = Pick<OAuthContext, 'config'> & {
  keys: { publicJwk(kid: string): Record<string, unknown> | undefined };
};

/**
 * Verifies a compact JWS this server signed: the kid must name a key we publish and never revoked, the alg must be
 * that key's alg (no algorithm confusion), the signature must verify, iss must be ours, and typ must be one the
 * caller accepts (so an access token is never taken for an ID token or the reverse, RFC 8725 §3.11). Returns
 * undefined for anything else. Lifetimes and revocation are the caller's business.
 */
export function verifyOwnJwt(
  ctx: JwtVerifyContext,
  token: string,
  acceptTyp: (typ: unknown) => boolean,
): OwnJwt | undefined {
  if (token.length > 8192) return undefined;
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [h, p, s] = parts as [string, string, string];
  let header: OwnJwt['header'];
  let claims: OwnJwt['claims'];
  try {
    header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
    claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
  if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object') return undefined;
  if (!acceptTyp(header.typ) || typeof header.kid !== 'string' || typeof header.alg !== 'string') return undefined;
  const jwk = ctx.keys.publicJwk(header.kid);
  if (!jwk || jwk.alg !== header.alg) return undefined;
  let key = publicKeys.get(header.kid);
  if (!key) {
    key = createPublicKey({ key: jwk as never, format: 'jwk' });
    publicKeys.set(header.kid, key);
  }
  if (!verifyCompactSignature(header.alg, key, Buffer.from(`${h}.${p}`), Buffer.from(s, 'base64url'))) return undefined;
  if (claims.iss !== ctx.config.issuer) return undefined;
  return { header, claims };
}
