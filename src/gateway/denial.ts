import type { OAuthError } from '../errors/oauth-error.ts';

/** Why the gateway refused a request: the `reason` of gateway.denied (docs/events.md). */
export type DenialReason =
  | 'bad_request_target'
  | 'bad_path'
  | 'no_route'
  | 'method_not_allowed'
  | 'token_in_query'
  | 'no_token'
  | 'multiple_credentials'
  | 'unsupported_scheme'
  | 'malformed_token'
  | 'alg_not_allowed'
  | 'not_an_access_token'
  | 'unsupported_header'
  | 'unknown_kid'
  | 'wrong_issuer'
  | 'missing_claims'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'key_not_trusted'
  | 'revoked'
  | 'wrong_audience'
  | 'dpop_required'
  | 'dpop_bound_token_as_bearer'
  | 'dpop_invalid'
  | 'insufficient_scope'
  | 'rate_limited'
  | 'revocation_feed_down';

/** Facts about the token, known once it verified: they go into the denial event's columns. */
export interface DeniedTokenFacts {
  jti: string;
  clientId: string;
  sub: string;
  grantId?: string | undefined;
}

/**
 * A refused gateway request: the OAuth error answered to the client (RFC 6750 §3 status and challenge) and the
 * reason recorded in gateway.denied. The error's description is all the client learns.
 */
export class Denial extends Error {
  readonly reason: DenialReason;
  readonly error: OAuthError;
  readonly token: DeniedTokenFacts | undefined;
  constructor(reason: DenialReason, error: OAuthError, token?: DeniedTokenFacts) {
    super(`${reason}: ${error.description}`);
    this.reason = reason;
    this.error = error;
    this.token = token;
  }
}
