import {
  InvalidResourceRequest,
  InvalidToken,
  type OAuthError,
  type ResourceChallenge,
} from '../errors/oauth-error.ts';
import { sha256 } from '../lib/crypto.ts';
import { verifyOwnAccessToken } from '../oauth/tokens/access-token.ts';
import type { GatewayContext } from './context.ts';
import { Denial, type DenialReason } from './denial.ts';

/** The facts of a verified access token the gateway uses on every request. Immutable; cached by token string. */
export interface GatewayToken {
  jti: string;
  sub: string;
  clientId: string;
  scope: string;
  scopes: ReadonlySet<string>;
  aud: readonly string[];
  /** Seconds since the epoch. */
  exp: number;
  iat: number;
  nbf: number | undefined;
  kid: string;
  grantId: string | undefined;
  /** RFC 9449 §6.1 cnf.jkt: the token is bound to this DPoP key. */
  jkt: string | undefined;
}

export type Scheme = 'bearer' | 'dpop';

export interface Credentials {
  scheme: Scheme;
  token: string;
  /** The DPoP header (RFC 9449 §4.1), when one was sent. */
  proof: string | undefined;
}

/** RFC 6750 §2.1 b64token. */
const CREDENTIALS = /^(bearer|dpop) +([A-Za-z0-9\-._~+/]+=*) *$/i;

/**
 * Reads the access token from the Authorization header (RFC 6750 §2.1; RFC 9449 §7.1 for DPoP). Scheme names are
 * case-insensitive (RFC 9110 §11.1). More than one Authorization or DPoP header is ambiguous and refused.
 */
export function readCredentials(
  authorization: readonly string[],
  dpop: readonly string[],
  challenge: ResourceChallenge,
): Credentials {
  if (authorization.length === 0)
    throw new Denial('no_token', new InvalidToken('an access token is required', true, challenge));
  if (authorization.length > 1 || dpop.length > 1)
    throw new Denial(
      'multiple_credentials',
      new InvalidResourceRequest('send one Authorization header (and at most one DPoP header)', challenge),
    );
  const h = authorization[0] ?? '';
  const m = CREDENTIALS.exec(h);
  if (!m) {
    if (/^(bearer|dpop)(\s|$)/i.test(h))
      throw new Denial('malformed_token', new InvalidToken('malformed credentials', false, challenge));
    throw new Denial(
      'unsupported_scheme',
      new InvalidToken('use the Bearer or DPoP authorization scheme', true, challenge),
    );
  }
  return {
    scheme: (m[1] ?? '').toLowerCase() === 'dpop' ? 'dpop' : 'bearer',
    token: m[2] ?? '',
    proof: dpop[0],
  };
}

/** RFC 9068 §4 (and RFC 8725 §3.11): "at+jwt", or its full media type; compared case-insensitively (RFC 7515 §4.1.9). */
function isAccessTokenTyp(typ: unknown): boolean {
  if (typeof typ !== 'string') return false;
  const t = typ.toLowerCase();
  return t === 'at+jwt' || t === 'application/at+jwt';
}

function decodeSegment(s: string): unknown {
  try {
    return JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

/**
 * Failures decided by the token string alone (and this process's fixed configuration), so the same string always
 * fails the same way: safe to remember. Not unknown_kid: a key published after this node last loaded the JWKS would
 * make the same token valid. Lifetime, revocation, audience and scopes are never decided here (policy.ts).
 */
const STABLE_FAILURES: ReadonlySet<DenialReason> = new Set([
  'malformed_token',
  'alg_not_allowed',
  'not_an_access_token',
  'unsupported_header',
  'wrong_issuer',
  'missing_claims',
  'bad_signature',
]);

/** How long a failed token is remembered: long enough to absorb a flood, short enough to hold little. */
const INVALID_TTL_MS = 60_000;

interface KnownInvalid {
  reason: DenialReason;
  description: string;
  until: number;
}

/**
 * Verifies access tokens locally (no network call per request) and keeps the verified ones in a bounded cache, so
 * the signature of a token is checked once, not on every request. The cache holds only what cannot change for a
 * given token string (signature, issuer, claims); expiry, key trust, revocation, audience, DPoP and scopes are
 * checked on every request (policy.ts). Tokens that failed for a reason the token itself fixes (STABLE_FAILURES) are
 * remembered briefly by hash, bounded in number, so a forged token sent again is refused without a signature check.
 *
 * Only our own keys verify: the kid must name a key in our JWKS, the alg must be on the allowlist (asymmetric only,
 * never "none" or HMAC, RFC 8725 §3.1-3.2) and must be that key's alg. jku, x5u, jwk and x5c headers are never
 * read, let alone fetched: a token cannot bring its own key.
 */
export class TokenVerifier {
  private readonly cache = new Map<string, GatewayToken>();
  /** Tokens that failed for a STABLE_FAILURES reason, by SHA-256 (base64url) of the token: a bounded size per entry. */
  private readonly invalid = new Map<string, KnownInvalid>();
  private readonly ctx: GatewayContext;
  private readonly algorithms: ReadonlySet<string>;
  private readonly maxEntries: number;
  private readonly maxInvalid: number;

  constructor(
    ctx: GatewayContext,
    opts: { algorithms: readonly string[]; cacheSize: number; invalidCacheSize?: number | undefined },
  ) {
    this.ctx = ctx;
    this.algorithms = new Set(opts.algorithms);
    this.maxEntries = opts.cacheSize;
    this.maxInvalid = opts.invalidCacheSize ?? 0;
  }

  get cached(): number {
    return this.cache.size;
  }

  verify(token: string, challenge: ResourceChallenge): GatewayToken {
    const hit = this.cache.get(token);
    if (hit) return hit;
    if (this.maxInvalid === 0) return this.verifyFully(token, challenge);
    // A token that failed before is refused the same way (same reason, the route's own challenge) without
    // re-running the checks: a flood of one forged token costs one signature check a minute.
    const key = sha256(token).toString('base64url');
    const known = this.invalid.get(key);
    if (known !== undefined) {
      if (known.until > this.ctx.clock.nowMs()) {
        this.ctx.metrics.gatewayTokenCheck('invalid_cached');
        throw new Denial(known.reason, new InvalidToken(known.description, false, challenge) as OAuthError);
      }
      this.invalid.delete(key);
    }
    try {
      return this.verifyFully(token, challenge);
    } catch (e) {
      if (e instanceof Denial && STABLE_FAILURES.has(e.reason)) {
        if (this.invalid.size >= this.maxInvalid) {
          const oldest = this.invalid.keys().next().value;
          if (oldest !== undefined) this.invalid.delete(oldest);
        }
        this.invalid.set(key, {
          reason: e.reason,
          description: e.error.description,
          until: this.ctx.clock.nowMs() + INVALID_TTL_MS,
        });
      }
      throw e;
    }
  }

  /** Full verification (signature and claims), counted, and the result kept in the verified-token cache. */
  private verifyFully(token: string, challenge: ResourceChallenge): GatewayToken {
    let t: GatewayToken;
    try {
      t = this.verifyUncached(token, challenge);
    } catch (e) {
      this.ctx.metrics.gatewayTokenCheck('invalid');
      throw e;
    }
    this.ctx.metrics.gatewayTokenCheck('valid');
    if (this.maxEntries > 0) {
      // Oldest first out: bounded whatever tokens arrive.
      if (this.cache.size >= this.maxEntries) {
        const oldest = this.cache.keys().next().value;
        if (oldest !== undefined) this.cache.delete(oldest);
      }
      this.cache.set(token, t);
    }
    return t;
  }

  /** Drops tokens that have expired (seconds), and failures remembered long enough. */
  purgeExpired(nowSeconds: number): void {
    for (const [k, t] of this.cache) if (t.exp < nowSeconds - 300) this.cache.delete(k);
    for (const [k, f] of this.invalid) if (f.until <= nowSeconds * 1000) this.invalid.delete(k);
  }

  private verifyUncached(token: string, challenge: ResourceChallenge): GatewayToken {
    const fail: (reason: DenialReason, description?: string) => never = (
      reason,
      description = 'the access token is not valid',
    ) => {
      throw new Denial(reason, new InvalidToken(description, false, challenge) as OAuthError);
    };
    const parts = token.split('.');
    if (parts.length !== 3 || token.length > 8192) fail('malformed_token');
    const header = decodeSegment(parts[0] as string) as Record<string, unknown> | undefined;
    const claims = decodeSegment(parts[1] as string) as Record<string, unknown> | undefined;
    if (!header || typeof header !== 'object' || !claims || typeof claims !== 'object') return fail('malformed_token');
    if (typeof header.alg !== 'string' || !this.algorithms.has(header.alg)) fail('alg_not_allowed');
    if (!isAccessTokenTyp(header.typ)) fail('not_an_access_token', 'the token is not an access token');
    // RFC 7515 §4.1.11: we understand no extension, so a token that marks one critical is refused.
    if (header.crit !== undefined) fail('unsupported_header');
    if (typeof header.kid !== 'string' || !this.ctx.keys.publicJwk(header.kid)) fail('unknown_kid');
    if (claims.iss !== this.ctx.config.issuer) fail('wrong_issuer');
    const aud = claims.aud;
    const audOk = typeof aud === 'string' || (Array.isArray(aud) && aud.every((a) => typeof a === 'string'));
    const typed =
      audOk &&
      typeof claims.jti === 'string' &&
      typeof claims.sub === 'string' &&
      typeof claims.client_id === 'string' &&
      typeof claims.exp === 'number' &&
      typeof claims.iat === 'number' &&
      (claims.scope === undefined || typeof claims.scope === 'string') &&
      (claims.nbf === undefined || typeof claims.nbf === 'number');
    if (!typed) fail('missing_claims');
    // Signature with the key the kid names (its alg must be the header's), issuer, and the RFC 9068 claims.
    const v = verifyOwnAccessToken(this.ctx, token);
    if (!v) return fail('bad_signature');
    const c = v.claims;
    const scope = c.scope ?? '';
    const cnf = c.cnf as { jkt?: unknown } | undefined;
    return {
      jti: c.jti,
      sub: c.sub,
      clientId: c.client_id,
      scope,
      scopes: new Set(scope.split(' ').filter(Boolean)),
      aud: Array.isArray(c.aud) ? c.aud : [c.aud],
      exp: c.exp,
      iat: c.iat,
      nbf: typeof c.nbf === 'number' ? c.nbf : undefined,
      kid: v.header.kid,
      grantId: typeof c.grant_id === 'string' ? c.grant_id : undefined,
      jkt: cnf && typeof cnf === 'object' && typeof cnf.jkt === 'string' ? cnf.jkt : undefined,
    };
  }
}
