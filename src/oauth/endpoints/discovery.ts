import { OIDC_SCOPES } from '../../config/load.ts';
import { ASSERTION_ALGORITHMS } from '../../config/schema.ts';
import { ACR_VALUES_SUPPORTED } from '../../identity/mfa.ts';
import type { OAuthContext } from '../context.ts';
import { USERINFO_PATH } from '../grants/user-tokens.ts';
import { GRANT_HANDLERS } from './token.ts';

export const PATHS = {
  token: '/token',
  introspect: '/introspect',
  revoke: '/revoke',
  jwks: '/jwks',
  authorize: '/authorize',
  par: '/par',
  endSession: '/logout',
  userinfo: USERINFO_PATH,
  deviceAuthorization: '/device_authorization',
  /** RFC 8628 §3.3 verification_uri: the page where the user enters the user_code. */
  device: '/device',
} as const;

/**
 * RFC 8414 authorization server metadata (also served as OpenID Provider metadata). Advertises only what works:
 * the grants that have handlers, the auth methods that are implemented.
 */
export function discoveryDocument(ctx: OAuthContext): Record<string, unknown> {
  const iss = ctx.config.issuer;
  const authMethods = ['client_secret_basic', 'client_secret_post', 'private_key_jwt'];
  const scopes = new Set<string>(OIDC_SCOPES);
  for (const r of ctx.config.resources) for (const s of r.scopes) scopes.add(s);
  return {
    issuer: iss,
    token_endpoint: iss + PATHS.token,
    jwks_uri: iss + PATHS.jwks,
    introspection_endpoint: iss + PATHS.introspect,
    revocation_endpoint: iss + PATHS.revoke,
    end_session_endpoint: iss + PATHS.endSession,
    grant_types_supported: Object.keys(GRANT_HANDLERS),
    authorization_endpoint: iss + PATHS.authorize,
    pushed_authorization_request_endpoint: iss + PATHS.par,
    // RFC 8628 §4.
    device_authorization_endpoint: iss + PATHS.deviceAuthorization,
    // Per client (RFC 9126 §5); not required of every client.
    require_pushed_authorization_requests: false,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    code_challenge_methods_supported: ['S256'],
    // RFC 9207 §3: every authorization response carries iss.
    authorization_response_iss_parameter_supported: true,
    prompt_values_supported: ['none', 'login', 'consent'],
    request_parameter_supported: false,
    request_uri_parameter_supported: false,
    scopes_supported: [...scopes],
    // Public clients (none) use PKCE-bound codes and client-bound refresh tokens; they cannot introspect.
    token_endpoint_auth_methods_supported: [...authMethods, 'none'],
    token_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    introspection_endpoint_auth_methods_supported: authMethods,
    introspection_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    revocation_endpoint_auth_methods_supported: [...authMethods, 'none'],
    revocation_endpoint_auth_signing_alg_values_supported: [...ASSERTION_ALGORITHMS],
    access_token_signing_alg_values_supported: [ctx.config.keys.algorithm],
    // RFC 9449 §5.1: DPoP proofs are accepted at /token with these algorithms.
    dpop_signing_alg_values_supported: [...ctx.config.dpop.signing_algs],
    // OpenID Provider metadata (OIDC Discovery §3).
    userinfo_endpoint: iss + PATHS.userinfo,
    id_token_signing_alg_values_supported: [ctx.config.keys.algorithm],
    subject_types_supported: ['public'],
    claims_supported: [
      'sub',
      'iss',
      'aud',
      'exp',
      'iat',
      'auth_time',
      'nonce',
      'acr',
      'amr',
      'sid',
      'at_hash',
      'name',
      'preferred_username',
      'updated_at',
      'email',
      'email_verified',
    ],
    claims_parameter_supported: false,
    // OIDC Discovery §3: "1" password, "2" a second factor, "3" a passkey (identity/mfa.ts); acr_values asks for one.
    acr_values_supported: ACR_VALUES_SUPPORTED,
  };
}
