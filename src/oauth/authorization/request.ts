import {
  InvalidRequest,
  InvalidRequestUri,
  InvalidScope,
  InvalidTarget,
  type OAuthError,
  RequestNotSupported,
  UnauthorizedClient,
  UnsupportedResponseType,
} from '../../errors/oauth-error.ts';
import { randomToken, sha256Hex } from '../../lib/crypto.ts';
import type { AuthorizationRequestRecord, ClientRecord } from '../../storage/ports.ts';
import type { OAuthContext } from '../context.ts';
import { redirectUriAllowed } from './redirect-uri.ts';

/** RFC 9126 §2.2: the request_uri is a URN; the random part is stored hashed. */
export const REQUEST_URI_PREFIX = 'urn:ietf:params:oauth:request_uri:';

export type Prompt = 'none' | 'login' | 'consent';

/** A validated authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1, RFC 7636, RFC 8707). */
export interface AuthorizationRequest {
  client: ClientRecord;
  redirectUri: string;
  state: string | undefined;
  scopes: string[];
  resources: string[];
  codeChallenge: string;
  nonce: string | undefined;
  prompt: Set<Prompt>;
  /** Seconds (OIDC max_age). */
  maxAge: number | undefined;
  loginHint: string | undefined;
  acrValues: string[];
  /** A sign-in at or after this instant (ms) satisfies prompt=login and max_age: set when we sent the user to log in. */
  loginAfter: number | undefined;
  /** RFC 9449 §10 dpop_jkt: the code will be redeemable only with a DPoP proof made with this key. */
  dpopJkt: string | undefined;
  /** The parameters to store if the request must wait for the user (internal ones start with an underscore). */
  params: Record<string, string>;
}

/** The client or redirect_uri cannot be trusted: answer with an error page, never a redirect (RFC 6749 §4.1.2.1). */
export class AuthorizationPageError extends Error {
  readonly error: string;
  readonly description: string;
  readonly status: number;
  constructor(error: string, description: string, status = 400) {
    super(`${error}: ${description}`);
    this.error = error;
    this.description = description;
    this.status = status;
  }
}

/** An error to send back to the client's redirect_uri, with state and iss (RFC 9207). */
export class AuthorizationRedirectError extends Error {
  readonly oauth: OAuthError;
  readonly client: ClientRecord;
  readonly redirectUri: string;
  readonly state: string | undefined;
  constructor(oauth: OAuthError, client: ClientRecord, redirectUri: string, state: string | undefined) {
    super(oauth.message);
    this.oauth = oauth;
    this.client = client;
    this.redirectUri = redirectUri;
    this.state = state;
  }
}

/** Parameters the server itself puts into stored requests; never accepted from outside. */
const INTERNAL = /^_/;

/**
 * RFC 7636 §4.2: code_challenge for S256 is BASE64URL(SHA256(verifier)): 43 characters. Also the shape of a
 * SHA-256 JWK thumbprint (RFC 7638, RFC 9449 §10 dpop_jkt).
 */
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/;

/**
 * Step 1: the client and the redirect_uri. Until both are known good, nothing may be redirected anywhere.
 */
export async function resolveClientAndRedirect(
  ctx: OAuthContext,
  params: Record<string, string>,
): Promise<{ client: ClientRecord; redirectUri: string }> {
  const clientId = params.client_id;
  if (!clientId) throw new AuthorizationPageError('invalid_request', 'the request has no client_id');
  const client = await ctx.clients.get(clientId);
  if (!client || client.disabled) throw new AuthorizationPageError('invalid_client', 'the client is unknown');
  const requested = params.redirect_uri;
  let redirectUri: string;
  if (requested === undefined) {
    // OAuth 2.1 §4.1.1: may be omitted only when exactly one is registered. OIDC requires it; we follow 2.1.
    if (client.redirect_uris.length !== 1)
      throw new AuthorizationPageError('invalid_request', 'redirect_uri is required for this client');
    redirectUri = client.redirect_uris[0]!;
  } else {
    if (!redirectUriAllowed(client.redirect_uris, requested))
      throw new AuthorizationPageError('invalid_request', 'the redirect_uri is not registered for this client');
    redirectUri = requested;
  }
  return { client, redirectUri };
}

function splitScopes(v: string | undefined): string[] {
  return [...new Set((v ?? '').split(' ').filter(Boolean))];
}

/**
 * The scopes and resources a user is asked to grant (authorization and device requests alike): scope is required and
 * must be within the client's (RFC 6749 §3.3); RFC 8707: one resource named, or every resource of the client that
 * defines a requested scope.
 */
export function requestedScopesAndResources(
  ctx: OAuthContext,
  client: ClientRecord,
  params: Readonly<Record<string, string>>,
): { scopes: string[]; resources: string[] } {
  const scopes = splitScopes(params.scope);
  if (scopes.length === 0) throw new InvalidScope('scope is required');
  const allowed = new Set(client.scope.split(' ').filter(Boolean));
  const notAllowed = scopes.filter((s) => !allowed.has(s));
  if (notAllowed.length)
    throw new InvalidScope(`scope not allowed for this client: ${notAllowed.join(' ').slice(0, 200)}`);
  let resources: string[];
  if (params.resource !== undefined) {
    if (!client.resources.includes(params.resource))
      throw new InvalidTarget('this client is not allowed this resource');
    resources = [params.resource];
  } else {
    const wanted = new Set(scopes);
    resources = ctx.config.resources
      .filter((r) => client.resources.includes(r.identifier) && r.scopes.some((s) => wanted.has(s)))
      .map((r) => r.identifier);
  }
  return { scopes, resources };
}

/**
 * Step 2: everything else. Errors from here on are sent to the (now trusted) redirect_uri.
 * `source` says whether the parameters came from a pushed request (PAR or an interaction we stored).
 */
export function validateAuthorizationParams(
  ctx: OAuthContext,
  client: ClientRecord,
  redirectUri: string,
  params: Record<string, string>,
  opts: { pushed: boolean },
): AuthorizationRequest {
  const state = params.state;
  const fail = (e: OAuthError): never => {
    throw new AuthorizationRedirectError(e, client, redirectUri, state);
  };
  if (params.request !== undefined) fail(new RequestNotSupported('request objects are not supported; use /par'));
  const responseType = params.response_type;
  if (responseType === undefined) fail(new InvalidRequest('response_type is required'));
  // OAuth 2.1 §4.1.1: only the code flow; implicit and hybrid responses put tokens in URLs.
  if (responseType !== 'code') fail(new UnsupportedResponseType('only response_type=code is supported'));
  if (!client.grant_types.includes('authorization_code'))
    fail(new UnauthorizedClient('this client may not use the authorization code grant'));
  if (client.require_pushed_authorization_requests && !opts.pushed)
    fail(new InvalidRequest('this client must push its authorization requests to the PAR endpoint (RFC 9126)'));
  if (params.response_mode !== undefined && params.response_mode !== 'query')
    fail(new InvalidRequest('only response_mode=query is supported'));

  // PKCE (RFC 7636, OAuth 2.1 §4.1.1): required for every client, S256 only (plain exposes the verifier).
  const challenge = params.code_challenge;
  if (challenge === undefined) fail(new InvalidRequest('code_challenge is required (PKCE, RFC 7636)'));
  const method = params.code_challenge_method ?? 'plain';
  if (method !== 'S256') fail(new InvalidRequest('code_challenge_method must be S256'));
  if (!S256_CHALLENGE.test(challenge!))
    fail(new InvalidRequest('code_challenge must be 43 base64url characters (RFC 7636 §4.2)'));

  // RFC 9449 §10: bind the code to a DPoP key. Only SHA-256 thumbprints (§6.1): 43 base64url characters.
  const dpopJkt = params.dpop_jkt;
  if (dpopJkt !== undefined && !S256_CHALLENGE.test(dpopJkt))
    fail(new InvalidRequest('dpop_jkt must be a SHA-256 JWK thumbprint: 43 base64url characters (RFC 9449 §10)'));

  let scopes: string[] = [];
  let resources: string[] = [];
  try {
    ({ scopes, resources } = requestedScopesAndResources(ctx, client, params));
  } catch (e) {
    fail(e as OAuthError);
  }

  const prompt = new Set<Prompt>();
  for (const p of splitScopes(params.prompt)) {
    if (p !== 'none' && p !== 'login' && p !== 'consent')
      fail(new InvalidRequest(`prompt value ${p.slice(0, 40)} is not supported`));
    prompt.add(p as Prompt);
  }
  // OIDC Core §3.1.2.1: none with any other value is an error.
  if (prompt.has('none') && prompt.size > 1) fail(new InvalidRequest('prompt=none cannot be combined'));
  let maxAge: number | undefined;
  if (params.max_age !== undefined) {
    if (!/^\d{1,9}$/.test(params.max_age)) fail(new InvalidRequest('max_age must be a non-negative integer'));
    maxAge = Number(params.max_age);
  }
  let loginAfter: number | undefined;
  if (params._login_after !== undefined) loginAfter = Number(params._login_after);

  return {
    client,
    redirectUri,
    state,
    scopes,
    resources,
    codeChallenge: challenge!,
    nonce: params.nonce,
    prompt,
    maxAge,
    loginHint: params.login_hint,
    acrValues: splitScopes(params.acr_values),
    loginAfter,
    dpopJkt,
    params: { ...params, redirect_uri: redirectUri },
  };
}

/** Drops parameters that only the server may set (a client must not pre-satisfy prompt=login). */
export function externalParams(params: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const [k, v] of Object.entries(params)) if (!INTERNAL.test(k)) out[k] = v;
  return out;
}

/** Stores a request (pushed by a client, or waiting for the user) and returns its request_uri. */
export async function storeAuthorizationRequest(
  ctx: OAuthContext,
  kind: AuthorizationRequestRecord['kind'],
  clientId: string,
  params: Record<string, string>,
  ttlSeconds: number,
): Promise<{ requestUri: string; record: AuthorizationRequestRecord }> {
  const id = randomToken(32);
  const now = ctx.clock.nowMs();
  const record: AuthorizationRequestRecord = {
    id_hash: sha256Hex(id),
    kind,
    client_id: clientId,
    params,
    created_at: now,
    expires_at: now + ttlSeconds * 1000,
    used_at: null,
  };
  await ctx.storage.authorizationRequests.insert(record);
  return { requestUri: REQUEST_URI_PREFIX + id, record };
}

/** RFC 9126 §4: the request_uri is single use and bound to the client that pushed it. */
export async function consumeRequestUri(
  ctx: OAuthContext,
  requestUri: string,
  clientId: string,
): Promise<AuthorizationRequestRecord> {
  if (!requestUri.startsWith(REQUEST_URI_PREFIX)) throw new InvalidRequestUri('request_uri is not one of ours');
  const id = requestUri.slice(REQUEST_URI_PREFIX.length);
  if (id.length < 20 || id.length > 100) throw new InvalidRequestUri('request_uri is not one of ours');
  const r = await ctx.storage.authorizationRequests.consume(sha256Hex(id), clientId, ctx.clock.nowMs());
  switch (r.status) {
    case 'ok':
      return r.request;
    case 'used':
      throw new InvalidRequestUri('request_uri was already used');
    case 'expired':
      throw new InvalidRequestUri('request_uri has expired');
    default:
      throw new InvalidRequestUri('request_uri is unknown or belongs to another client');
  }
}
