/**
 * DPoP (RFC 9449): proof-of-possession of a client key for access and refresh tokens.
 *
 * Public API — the gateway calls this; the signature is stable:
 *
 *   verifyDpopProof(
 *     ctx: DpopContext,                    // an OAuthContext fits (config, clock, storage, kek)
 *     check: {
 *       proof: string | string[] | undefined;  // the raw DPoP header value(s) of the request
 *       method: string;                    // the request's HTTP method (htm)
 *       url: string;                       // the request's absolute URL as the client addressed it (htu)
 *       accessToken?: string;              // the access token presented with it (checks ath)
 *       expectedJkt?: string;              // the token's cnf.jkt (the proof's key must be that key)
 *       requireNonce?: boolean;            // a current server nonce is required (§8)
 *     },
 *   ): Promise<{ jkt: string; jti: string }>
 *
 * Throws InvalidDpopProof (invalid_dpop_proof, 400; a resource server answers 401 with
 * `WWW-Authenticate: DPoP error="invalid_dpop_proof"`) or UseDpopNonce (use_dpop_nonce, 400, with the fresh nonce
 * in `.nonce` and a `dpop-nonce` header; a resource server answers 401). Also exported: currentDpopNonce(ctx) for a
 * DPoP-Nonce header on other responses, and dpopAth(accessToken).
 */
import { createHmac } from 'node:crypto';
import { calculateJwkThumbprint, compactVerify, importJWK, type JWK } from 'jose';
import { InvalidDpopProof, UseDpopNonce } from '../errors/oauth-error.ts';
import { constantTimeEqual, sha256, sha256Hex } from '../lib/crypto.ts';
import type { OAuthContext } from './context.ts';

/**
 * What the verifier needs: config (dpop.*, tokens.clock_skew), the clock, the replay store (dpopReplay when set,
 * else storage.replay), the KEK (nonces).
 */
export type DpopContext = Pick<OAuthContext, 'config' | 'clock' | 'storage' | 'kek' | 'dpopReplay'>;

export interface DpopProofCheck {
  proof: string | string[] | undefined;
  method: string;
  url: string;
  accessToken?: string | undefined;
  expectedJkt?: string | undefined;
  requireNonce?: boolean | undefined;
}

export interface VerifiedDpopProof {
  /** RFC 7638 SHA-256 thumbprint of the proof's key (base64url): what cnf.jkt carries (RFC 9449 §6.1). */
  jkt: string;
  jti: string;
}

/** A compact JWS: three base64url parts. Anything else (two headers joined by a comma, JSON serialisation) fails. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const MAX_PROOF_BYTES = 8192;
/** JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037 §2). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const PUBLIC_KTYS = new Set(['EC', 'RSA', 'OKP']);

function decodeJson(part: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** RFC 9449 §4.2 ath: base64url of the SHA-256 of the access token's ASCII bytes. */
export function dpopAth(accessToken: string): string {
  return sha256(accessToken).toString('base64url');
}

/**
 * RFC 9449 §4.3 step 9: htu compared with the request URL without query and fragment, after the syntax-based
 * normalisation of RFC 3986 §6.2.2 (case of scheme and host, default port, dot segments, percent-encoding case).
 * Undefined when it is not an absolute http(s) URL.
 */
export function normalizeHtu(value: string): string | undefined {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return undefined;
  u.search = '';
  u.hash = '';
  return u.href.replace(/%[0-9a-f]{2}/gi, (m) => m.toUpperCase());
}

// --- Server nonces (RFC 9449 §8). Stateless: the nonce of period N is HMAC(key derived from the KEK, N), so every
// node sharing the KEK issues and accepts the same nonces without shared state. A nonce is accepted during its own
// period and the next one: a client given a nonce just before a rotation still has a whole period to use it.

const nonceKeys = new WeakMap<object, { key: Buffer; cache: Map<number, string> }>();

function nonceForPeriod(ctx: DpopContext, period: number): string {
  let entry = nonceKeys.get(ctx.kek);
  if (!entry) {
    entry = { key: ctx.kek.deriveKey('dpop-nonce'), cache: new Map() };
    nonceKeys.set(ctx.kek, entry);
  }
  let nonce = entry.cache.get(period);
  if (nonce === undefined) {
    nonce = createHmac('sha256', entry.key).update(String(period)).digest('base64url');
    if (entry.cache.size > 4) entry.cache.clear();
    entry.cache.set(period, nonce);
  }
  return nonce;
}

function currentPeriod(ctx: DpopContext): number {
  return Math.floor(ctx.clock.nowMs() / (ctx.config.dpop.nonce_rotation * 1000));
}

/** The nonce to hand out now (DPoP-Nonce header). */
export function currentDpopNonce(ctx: DpopContext): string {
  return nonceForPeriod(ctx, currentPeriod(ctx));
}

/** Whether a nonce is this period's or the previous one's. */
export function isValidDpopNonce(ctx: DpopContext, nonce: unknown): boolean {
  if (typeof nonce !== 'string' || nonce.length !== 43) return false;
  const p = currentPeriod(ctx);
  // Both compared, in constant time, so timing does not tell which period matched.
  const a = constantTimeEqual(nonce, nonceForPeriod(ctx, p));
  const b = constantTimeEqual(nonce, nonceForPeriod(ctx, p - 1));
  return a || b;
}

/** RFC 9449 §4.3: checks one DPoP proof. See the top of this file. */
export async function verifyDpopProof(ctx: DpopContext, check: DpopProofCheck): Promise<VerifiedDpopProof> {
  const fail = (why: string): never => {
    throw new InvalidDpopProof(why);
  };
  // §4.3 step 1: exactly one DPoP header field.
  let proof = check.proof;
  if (Array.isArray(proof)) {
    if (proof.length !== 1) fail('exactly one DPoP header is allowed');
    proof = proof[0];
  }
  if (proof === undefined || proof === '') return fail('a DPoP proof is required');
  // Step 2: a single well-formed JWT.
  if (proof.length > MAX_PROOF_BYTES || !COMPACT_JWS.test(proof)) fail('the DPoP proof is not a compact JWT');
  const [h, p] = proof.split('.') as [string, string, string];
  const header = decodeJson(h);
  const claims = decodeJson(p);
  if (!header || !claims) return fail('the DPoP proof is not a JWT');
  // Step 4: typ.
  if (header.typ !== 'dpop+jwt') fail('the DPoP proof must have typ dpop+jwt');
  // Step 5: an asymmetric algorithm we accept (never none, never HMAC).
  const alg = header.alg;
  if (typeof alg !== 'string' || !(ctx.config.dpop.signing_algs as readonly string[]).includes(alg))
    fail('the DPoP proof algorithm is not accepted');
  // Step 7: jwk is a public key (no private or symmetric members).
  const jwk = header.jwk;
  if (!jwk || typeof jwk !== 'object' || Array.isArray(jwk)) return fail('the DPoP proof has no jwk header');
  const j = jwk as Record<string, unknown>;
  if (typeof j.kty !== 'string' || !PUBLIC_KTYS.has(j.kty)) fail('the DPoP proof jwk must be a public key');
  if (PRIVATE_MEMBERS.some((m) => m in j)) fail('the DPoP proof jwk must not contain private key material');
  // Step 6: the signature verifies with that key.
  try {
    await compactVerify(proof, await importJWK(j as JWK, alg as string), { algorithms: [alg as string] });
  } catch {
    return fail('the DPoP proof signature does not verify with its jwk');
  }
  // Step 3: the required claims.
  const { htm, htu, iat, jti } = claims;
  if (typeof jti !== 'string' || jti.length === 0 || jti.length > 256) fail('the DPoP proof needs a jti');
  if (typeof htm !== 'string') fail('the DPoP proof needs htm');
  if (typeof htu !== 'string') fail('the DPoP proof needs htu');
  if (typeof iat !== 'number' || !Number.isFinite(iat)) fail('the DPoP proof needs a numeric iat');
  // Step 8: htm.
  if (htm !== check.method) fail('the DPoP proof htm does not match the request method');
  // Step 9: htu, without query and fragment, normalised.
  const want = normalizeHtu(check.url);
  if (want === undefined || normalizeHtu(htu as string) !== want)
    fail('the DPoP proof htu does not match the request URL');
  // Step 11: iat within the acceptance window (either way: a future iat is a wrong clock or a pre-made proof).
  const nowMs = ctx.clock.nowMs();
  const windowS = ctx.config.dpop.iat_window;
  if (Math.abs(nowMs / 1000 - (iat as number)) > windowS) fail('the DPoP proof iat is outside the acceptance window');
  // Step 12: ath when an access token is presented with the proof.
  if (check.accessToken !== undefined) {
    if (typeof claims.ath !== 'string' || !constantTimeEqual(claims.ath, dpopAth(check.accessToken)))
      fail('the DPoP proof ath does not match the access token');
  }
  // Step 12: the key is the one the token is bound to (cnf.jkt).
  const jkt = await calculateJwkThumbprint(j as JWK, 'sha256');
  if (check.expectedJkt !== undefined && !constantTimeEqual(jkt, check.expectedJkt))
    fail('the DPoP proof key is not the key the token is bound to');
  // Step 10: the server's nonce (§8), after the other checks so a retry only needs the nonce fixed.
  if (check.requireNonce && !isValidDpopNonce(ctx, claims.nonce))
    throw new UseDpopNonce(
      currentDpopNonce(ctx),
      claims.nonce === undefined
        ? 'the DPoP proof must carry the nonce given in the DPoP-Nonce header'
        : 'the DPoP proof nonce is stale: use the one in the DPoP-Nonce header',
    );
  // Step 11 (§11.1): the jti once within the window. Last, so a proof refused for another reason is not recorded.
  // Recorded until the proof can no longer pass the iat check anywhere, per key (jti spaces of keys are separate).
  const until = Math.max(nowMs, (iat as number) * 1000) + (windowS + ctx.config.tokens.clock_skew) * 1000;
  const replay = ctx.dpopReplay ?? ctx.storage.replay;
  if (!(await replay.useOnce(`dpop:${sha256Hex(`${jkt}.${jti}`)}`, until)))
    fail('the DPoP proof was already used (replayed jti)');
  return { jkt, jti: jti as string };
}
