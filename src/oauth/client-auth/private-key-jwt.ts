import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose';
import { ASSERTION_ALGORITHMS } from '../../config/schema.ts';
import { InvalidClient } from '../../errors/oauth-error.ts';
import { sha256Hex } from '../../lib/crypto.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import type { OAuthContext } from '../context.ts';

export const JWT_BEARER_ASSERTION = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

const remoteSets = new Map<string, JWTVerifyGetKey>();

/** Keys come only from the client's registered jwks or jwks_uri; header jwk/jku/x5u are never consulted. */
function keySource(client: ClientRecord): JWTVerifyGetKey {
  if (client.jwks) return createLocalJWKSet(client.jwks as never);
  if (client.jwks_uri) {
    let set = remoteSets.get(client.jwks_uri);
    if (!set) {
      set = createRemoteJWKSet(new URL(client.jwks_uri), {
        timeoutDuration: 3000,
        cooldownDuration: 30000,
        cacheMaxAge: 600000,
      });
      remoteSets.set(client.jwks_uri, set);
    }
    return set;
  }
  throw new InvalidClient('client has no registered keys');
}

/**
 * RFC 7523 §3 client assertion checks: signature by a registered key with an allowed algorithm, iss = sub =
 * client_id, aud = our issuer identifier (only: a token endpoint URL or other audiences are refused, which closes
 * the audience-confusion attack on assertions), exp required and bounded, iat not in the future, jti single use.
 */
export async function verifyClientAssertion(ctx: OAuthContext, client: ClientRecord, assertion: string): Promise<void> {
  const { tokens } = ctx.config;
  const allowed = client.token_endpoint_auth_signing_alg
    ? [client.token_endpoint_auth_signing_alg]
    : [...ASSERTION_ALGORITHMS];
  let header: ReturnType<typeof decodeProtectedHeader>;
  try {
    header = decodeProtectedHeader(assertion);
  } catch {
    throw new InvalidClient('client_assertion is not a JWT');
  }
  if (typeof header.alg !== 'string' || !allowed.includes(header.alg as never))
    throw new InvalidClient(`client_assertion algorithm ${String(header.alg)} is not allowed`);
  const now = ctx.clock.nowMs();
  let payload: import('jose').JWTPayload;
  try {
    ({ payload } = await jwtVerify(assertion, keySource(client), {
      algorithms: allowed,
      issuer: client.client_id,
      subject: client.client_id,
      requiredClaims: ['exp', 'jti', 'aud'],
      clockTolerance: tokens.clock_skew,
      currentDate: new Date(now),
    }));
  } catch (e) {
    const reason =
      e instanceof errors.JWTExpired
        ? 'client_assertion has expired'
        : e instanceof errors.JWTClaimValidationFailed
          ? `client_assertion claim ${e.claim} is invalid`
          : e instanceof errors.JWKSNoMatchingKey || e instanceof errors.JWSSignatureVerificationFailed
            ? 'client_assertion signature does not match a registered key'
            : 'client_assertion could not be verified';
    throw new InvalidClient(reason);
  }
  const aud = payload.aud;
  const audOk = aud === ctx.config.issuer || (Array.isArray(aud) && aud.length === 1 && aud[0] === ctx.config.issuer);
  if (!audOk) throw new InvalidClient('client_assertion aud must be the issuer identifier');
  const exp = payload.exp as number;
  const nowS = Math.floor(now / 1000);
  const start = typeof payload.iat === 'number' ? payload.iat : nowS;
  if (typeof payload.iat === 'number' && payload.iat > nowS + tokens.clock_skew)
    throw new InvalidClient('client_assertion iat is in the future');
  if (exp - start > tokens.client_assertion_max_lifetime)
    throw new InvalidClient(`client_assertion lifetime exceeds ${tokens.client_assertion_max_lifetime} s`);
  if (typeof payload.jti !== 'string' || payload.jti.length === 0 || payload.jti.length > 512)
    throw new InvalidClient('client_assertion jti is missing or too long');
  // Single use until it expires (plus skew): a second presentation is a replay.
  const key = `pkjwt:${sha256Hex(`${client.client_id}\u0000${payload.jti}`)}`;
  const first = await ctx.storage.replay.useOnce(key, (exp + tokens.clock_skew) * 1000);
  if (!first) throw new InvalidClient('client_assertion jti has already been used');
}
