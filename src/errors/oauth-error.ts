/**
 * One class per RFC error code. Domain code throws these; src/http serialises them with toErrorResponse().
 * `description` is shown to the client and must never carry internal detail (stack, SQL, paths).
 */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'unsupported_token_type'
  | 'server_error'
  | 'temporarily_unavailable'
  | 'invalid_token'
  | 'insufficient_scope'
  // Authorization endpoint (RFC 6749 §4.1.2.1, OIDC Core §3.1.2.6, RFC 9126 §2.3)
  | 'unsupported_response_type'
  | 'access_denied'
  | 'login_required'
  | 'consent_required'
  | 'interaction_required'
  | 'invalid_request_uri'
  | 'request_not_supported'
  // Device authorization grant at the token endpoint (RFC 8628 §3.5)
  | 'authorization_pending'
  | 'slow_down'
  | 'expired_token'
  // DPoP (RFC 9449 §12.2): a bad proof; the server wants a proof carrying its nonce (§8)
  | 'invalid_dpop_proof'
  | 'use_dpop_nonce'
  // Pages (not OAuth codes; shown on error pages only)
  | 'invalid_csrf_token'
  | 'not_found';

export class OAuthError extends Error {
  readonly code: OAuthErrorCode;
  readonly status: number;
  readonly description: string;
  /** Headers the HTTP layer must add, e.g. WWW-Authenticate for invalid_client via Basic (RFC 6749 §5.2). */
  readonly headers: Record<string, string>;
  constructor(code: OAuthErrorCode, status: number, description: string, headers: Record<string, string> = {}) {
    super(`${code}: ${description}`);
    this.code = code;
    this.status = status;
    this.description = description;
    this.headers = headers;
  }
}

export class InvalidRequest extends OAuthError {
  constructor(description: string) {
    super('invalid_request', 400, description);
  }
}

/** RFC 6749 §5.2: 401 and WWW-Authenticate when the client tried HTTP Basic. */
export class InvalidClient extends OAuthError {
  constructor(description: string, usedBasic = false) {
    super(
      'invalid_client',
      401,
      description,
      usedBasic ? { 'www-authenticate': 'Basic realm="portcullis", charset="UTF-8"' } : {},
    );
  }
}

export class InvalidGrant extends OAuthError {
  constructor(description: string) {
    super('invalid_grant', 400, description);
  }
}

export class UnauthorizedClient extends OAuthError {
  constructor(description: string) {
    super('unauthorized_client', 400, description);
  }
}

export class UnsupportedGrantType extends OAuthError {
  constructor(description: string) {
    super('unsupported_grant_type', 400, description);
  }
}

export class InvalidScope extends OAuthError {
  constructor(description: string) {
    super('invalid_scope', 400, description);
  }
}

/** RFC 8707 §2. */
export class InvalidTarget extends OAuthError {
  constructor(description: string) {
    super('invalid_target', 400, description);
  }
}

/** RFC 7009 §2.2.1. */
export class UnsupportedTokenType extends OAuthError {
  constructor(description: string) {
    super('unsupported_token_type', 400, description);
  }
}

export class ServerError extends OAuthError {
  constructor(description = 'the server could not complete the request') {
    super('server_error', 500, description);
  }
}

export class TemporarilyUnavailable extends OAuthError {
  constructor(description = 'the server is temporarily unable to handle the request', retryAfterSeconds = 1) {
    super('temporarily_unavailable', 503, description, { 'retry-after': String(retryAfterSeconds) });
  }
}

/**
 * A rate limit refused the request: HTTP 429 (RFC 6585 §4) with Retry-After (RFC 9110 §10.2.3). OAuth defines no
 * error code for this at the token or introspection endpoint; temporarily_unavailable (RFC 6749 §4.1.2.1) is the
 * registered code that means "try again later", and `slow_down` is not used because RFC 8628 §3.5 gives it a
 * device-polling meaning (add 5 s to the interval) that a client would wrongly apply. See docs/errors.md.
 */
export class RateLimited extends OAuthError {
  constructor(retryAfterSeconds: number) {
    super('temporarily_unavailable', 429, 'too many requests: try again later', {
      'retry-after': String(retryAfterSeconds),
    });
  }
}

/** RFC 6749 §4.1.2.1. */
export class UnsupportedResponseType extends OAuthError {
  constructor(description: string) {
    super('unsupported_response_type', 400, description);
  }
}

/** RFC 6749 §4.1.2.1 at the authorization endpoint; at the token endpoint (RFC 8628 §3.5) it is a 400. */
export class AccessDenied extends OAuthError {
  constructor(description: string, status = 403) {
    super('access_denied', status, description);
  }
}

/** RFC 8628 §3.5: the user has not decided yet; the device keeps polling at its interval. */
export class AuthorizationPending extends OAuthError {
  constructor(description = 'the user has not approved or denied the request yet') {
    super('authorization_pending', 400, description);
  }
}

/** RFC 8628 §3.5: the device polled faster than its interval, which has now grown by 5 seconds. */
export class SlowDown extends OAuthError {
  constructor(description: string) {
    super('slow_down', 400, description);
  }
}

/** RFC 8628 §3.5: the device_code expired before it was approved and redeemed; start again. */
export class ExpiredToken extends OAuthError {
  constructor(description = 'the device_code has expired; start a new device authorization') {
    super('expired_token', 400, description);
  }
}

/**
 * RFC 9449 §5 (token endpoint: 400) / §7.1 (a resource server, e.g. the gateway, answers 401 with a DPoP
 * challenge instead: it maps this error itself). The description names the failed check, never key material.
 */
export class InvalidDpopProof extends OAuthError {
  constructor(description: string) {
    super('invalid_dpop_proof', 400, description);
  }
}

/**
 * RFC 9449 §8: the proof lacks the server's current nonce (or carries a stale one). The fresh nonce goes in the
 * DPoP-Nonce header; the client retries with it. 400 at the token endpoint; the gateway maps it to 401 (§9).
 */
export class UseDpopNonce extends OAuthError {
  readonly nonce: string;
  constructor(nonce: string, description = 'the DPoP proof must carry the nonce given in the DPoP-Nonce header') {
    super('use_dpop_nonce', 400, description, { 'dpop-nonce': nonce });
    this.nonce = nonce;
  }
}

/** OIDC Core §3.1.2.6: prompt=none and no usable session. */
export class LoginRequired extends OAuthError {
  constructor(description: string) {
    super('login_required', 400, description);
  }
}

/** OIDC Core §3.1.2.6: prompt=none and consent is missing. */
export class ConsentRequired extends OAuthError {
  constructor(description: string) {
    super('consent_required', 400, description);
  }
}

/** RFC 9126 §2.3 / RFC 9101 §6.2: the request_uri is unknown, used, expired or another client's. */
export class InvalidRequestUri extends OAuthError {
  constructor(description: string) {
    super('invalid_request_uri', 400, description);
  }
}

/** OIDC Core §3.1.2.6: request objects (the request parameter) are not supported. */
export class RequestNotSupported extends OAuthError {
  constructor(description: string) {
    super('request_not_supported', 400, description);
  }
}

/** A form POST without the session's CSRF token (a page error, never sent to a client). */
export class InvalidCsrfToken extends OAuthError {
  constructor() {
    super('invalid_csrf_token', 403, 'the form expired or did not come from this site; go back and try again');
  }
}

export interface ErrorBody {
  error: OAuthErrorCode;
  error_description: string;
}

export function toErrorResponse(err: OAuthError): { status: number; headers: Record<string, string>; body: ErrorBody } {
  return {
    status: err.status,
    headers: err.headers,
    body: { error: err.code, error_description: err.description },
  };
}

/**
 * Extra parameters of a protected resource's challenge: RFC 9728 §5.1 resource_metadata (where a client discovers
 * the authorization server) and RFC 9449 §7.1 DPoP (a DPoP challenge with the proof algorithms accepted, instead of
 * or beside Bearer).
 */
export interface ResourceChallenge {
  resourceMetadata?: string | undefined;
  dpop?: 'only' | 'also' | undefined;
  dpopAlgs?: readonly string[] | undefined;
}

/** RFC 6750 §3: a protected resource answers a missing or bad bearer token with 401 and WWW-Authenticate. */
function bearerChallenge(
  code: string | undefined,
  description: string | undefined,
  scope?: string,
  opts: ResourceChallenge = {},
): string {
  const parts = ['realm="portcullis"'];
  if (code) parts.push(`error="${code}"`);
  if (description) parts.push(`error_description="${description.replace(/["\\]/g, '')}"`);
  if (scope) parts.push(`scope="${scope}"`);
  if (opts.resourceMetadata) parts.push(`resource_metadata="${opts.resourceMetadata.replace(/["\\]/g, '')}"`);
  const bearer = `Bearer ${parts.join(', ')}`;
  if (!opts.dpop) return bearer;
  // Several challenges in one field are comma-separated (RFC 9110 §11.6.1).
  const algs = opts.dpopAlgs?.length ? [`algs="${opts.dpopAlgs.join(' ')}"`] : [];
  const dpop = `DPoP ${[...algs, ...parts].join(', ')}`;
  return opts.dpop === 'only' ? dpop : `${bearer}, ${dpop}`;
}

export class InvalidToken extends OAuthError {
  /** No credentials at all: RFC 6750 §3.1 says the challenge then carries no error code. */
  constructor(description: string, missing = false, challenge?: ResourceChallenge) {
    super('invalid_token', 401, description, {
      'www-authenticate': missing
        ? bearerChallenge(undefined, undefined, undefined, challenge)
        : bearerChallenge('invalid_token', description, undefined, challenge),
    });
  }
}

export class InsufficientScope extends OAuthError {
  constructor(description: string, scope: string, challenge?: ResourceChallenge) {
    super('insufficient_scope', 403, description, {
      'www-authenticate': bearerChallenge('insufficient_scope', description, scope, challenge),
    });
  }
}

/** RFC 6750 §3.1 invalid_request at a protected resource: 400 with the challenge (e.g. a token in the query). */
export class InvalidResourceRequest extends OAuthError {
  constructor(description: string, challenge?: ResourceChallenge) {
    super('invalid_request', 400, description, {
      'www-authenticate': bearerChallenge('invalid_request', description, undefined, challenge),
    });
  }
}

/**
 * RFC 9449 §7.1 / §9: a protected resource refuses a DPoP proof (invalid_dpop_proof) or asks for its nonce
 * (use_dpop_nonce) with 401 and a DPoP challenge; the nonce travels in the DPoP-Nonce header.
 */
export class ResourceDpopError extends OAuthError {
  constructor(
    code: 'invalid_dpop_proof' | 'use_dpop_nonce',
    description: string,
    challenge: ResourceChallenge = {},
    nonce?: string,
  ) {
    super(code, 401, description, {
      'www-authenticate': bearerChallenge(code, description, undefined, {
        ...challenge,
        dpop: challenge.dpop ?? 'also',
      }),
      ...(nonce ? { 'dpop-nonce': nonce } : {}),
    });
  }
}

/** Configuration and operational errors that are not OAuth protocol errors. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}
