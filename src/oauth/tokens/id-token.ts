import { createHash } from 'node:crypto';
import type { OAuthContext } from '../context.ts';

export interface IdTokenInput {
  clientId: string;
  sub: string;
  /** When the user authenticated (ms). */
  authTime: number | null;
  nonce?: string | null;
  acr?: string | null;
  amr?: string[] | null;
  /** The session id (OIDC Front-/Back-Channel Logout sid). */
  sid?: string | null;
  /** The access token issued with it: at_hash binds the two (OIDC Core §3.1.3.6). */
  accessToken: string;
}

/**
 * OIDC Core §3.1.3.6 at_hash: base64url of the left half of the hash of the access token, with the hash of the ID
 * token's alg (SHA-256 for ES256, PS256, RS256; SHA-512 for EdDSA with Ed25519, as peers do).
 */
export function atHash(accessToken: string, alg: string): string {
  const digest = createHash(alg === 'EdDSA' ? 'sha512' : 'sha256')
    .update(accessToken, 'ascii')
    .digest();
  return digest.subarray(0, digest.length / 2).toString('base64url');
}

/**
 * Issues an ID token (OIDC Core §2): who signed in, when and how, for this client only. Profile and email claims are
 * not copied in: the client reads them from userinfo with the access token (§5.4), so the ID token stays small and
 * carries no more personal data than the sign-in needs.
 */
export async function signIdToken(ctx: OAuthContext, input: IdTokenInput): Promise<{ token: string; kid: string }> {
  const signer = ctx.keys.current();
  const iat = Math.floor(ctx.clock.nowMs() / 1000);
  const claims: Record<string, unknown> = {
    iss: ctx.config.issuer,
    sub: input.sub,
    aud: input.clientId,
    exp: iat + ctx.config.tokens.id_token_ttl,
    iat,
  };
  if (input.authTime !== null) claims.auth_time = Math.floor(input.authTime / 1000);
  if (input.nonce) claims.nonce = input.nonce;
  if (input.acr) claims.acr = input.acr;
  if (input.amr?.length) claims.amr = input.amr;
  if (input.sid) claims.sid = input.sid;
  claims.at_hash = atHash(input.accessToken, signer.alg);
  return ctx.keys.signJwt('JWT', claims, signer);
}
