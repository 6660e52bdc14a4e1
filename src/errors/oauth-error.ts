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
  | 'insufficient_scope';

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

/** Configuration and operational errors that are not OAuth protocol errors. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.problems = problems;
  }
}
