/** Small HTTP/OAuth helpers shared by the black-box suites. Raw fetch where a library would hide the detail. */
import { randomBytes } from 'node:crypto';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, type JWTPayload, jwtVerify } from 'jose';
import type { ConfigObject, RunningServer } from './server.ts';

export const API = 'https://api.example.com';
export const BILLING = 'https://billing.example.com';
export const REPORTS = 'https://reports.example.com';

export function secret(): string {
  return randomBytes(24).toString('base64url');
}

export interface TestClient {
  client_id: string;
  client_secret: string;
}

/**
 * A config with three resources and clients that exercise the client_credentials rules:
 * - svc:     basic, orders:read orders:write, one resource (api) by default
 * - poster:  client_secret_post, orders:read
 * - multi:   basic, scopes on api and billing, two resources -> must name one
 * - nogrant: basic, grant_types [authorization_code] only (client_credentials not allowed)
 * - billing: basic, billing resource only (a resource server for billing)
 * - api-rs:  basic, api resource, used as an introspecting resource server
 */
export type BaseClients = Record<'svc' | 'poster' | 'multi' | 'nogrant' | 'billing' | 'apiRs', TestClient>;

export function baseConfig(): { config: ConfigObject; clients: BaseClients } {
  const clients: BaseClients = {
    svc: { client_id: 'svc', client_secret: secret() },
    poster: { client_id: 'poster', client_secret: secret() },
    multi: { client_id: 'multi', client_secret: secret() },
    nogrant: { client_id: 'nogrant', client_secret: secret() },
    billing: { client_id: 'billing', client_secret: secret() },
    apiRs: { client_id: 'api-rs', client_secret: secret() },
  };
  const config: ConfigObject = {
    log: { level: 'info' },
    resources: [
      { identifier: API, scopes: ['orders:read', 'orders:write'] },
      { identifier: BILLING, scopes: ['invoices:read'] },
      { identifier: REPORTS, scopes: ['reports:read'] },
    ],
    clients: [
      {
        client_id: 'svc',
        client_secret: clients.svc.client_secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        scope: 'orders:read orders:write',
      },
      {
        client_id: 'poster',
        client_secret: clients.poster.client_secret,
        token_endpoint_auth_method: 'client_secret_post',
        scope: 'orders:read',
      },
      {
        client_id: 'multi',
        client_secret: clients.multi.client_secret,
        scope: 'orders:read invoices:read',
        resources: [API, BILLING],
      },
      {
        client_id: 'nogrant',
        client_secret: clients.nogrant.client_secret,
        grant_types: ['authorization_code'],
        redirect_uris: ['https://app.example.com/cb'],
        scope: 'orders:read',
      },
      {
        client_id: 'billing',
        client_secret: clients.billing.client_secret,
        scope: 'invoices:read',
        resources: [BILLING],
      },
      {
        client_id: 'api-rs',
        client_secret: clients.apiRs.client_secret,
        scope: 'orders:read',
        resources: [API],
      },
    ],
  };
  return { config, clients };
}

/** RFC 6749 §2.3.1: form-urlencode id and secret, then base64. */
export function basicAuth(clientId: string, clientSecret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(clientSecret)}`).toString('base64')}`;
}

export interface HttpResult {
  status: number;
  headers: Headers;
  text: string;
  /** Parsed JSON body, or undefined if not JSON. */
  json: Record<string, unknown> | undefined;
}

export async function toResult(res: Response): Promise<HttpResult> {
  const text = await res.text();
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** POSTs an application/x-www-form-urlencoded body. `body` may be a raw string to control exact bytes. */
export async function postForm(
  url: string,
  body: Record<string, string> | string | [string, string][],
  opts: { basic?: [string, string]; headers?: Record<string, string> } = {},
): Promise<HttpResult> {
  const headers: Record<string, string> = {
    'content-type': 'application/x-www-form-urlencoded',
    ...(opts.headers ?? {}),
  };
  if (opts.basic) headers.authorization = basicAuth(opts.basic[0], opts.basic[1]);
  const payload = typeof body === 'string' ? body : new URLSearchParams(body).toString();
  return toResult(await fetch(url, { method: 'POST', headers, body: payload }));
}

/** client_credentials with client_secret_basic; throws with the body unless 200. */
export async function getToken(
  server: RunningServer,
  client: TestClient,
  params: Record<string, string> = {},
): Promise<{ access_token: string; body: Record<string, unknown> }> {
  const r = await postForm(
    `${server.url}/token`,
    { grant_type: 'client_credentials', ...params },
    {
      basic: [client.client_id, client.client_secret],
    },
  );
  if (r.status !== 200 || !r.json || typeof r.json.access_token !== 'string')
    throw new Error(`token request for ${client.client_id} failed: ${r.status} ${r.text}`);
  return { access_token: r.json.access_token, body: r.json };
}

export async function introspect(
  server: RunningServer,
  caller: TestClient,
  token: string,
  extra: Record<string, string> = {},
): Promise<HttpResult> {
  return postForm(`${server.url}/introspect`, { token, ...extra }, { basic: [caller.client_id, caller.client_secret] });
}

export async function revoke(
  server: RunningServer,
  caller: TestClient,
  token: string,
  extra: Record<string, string> = {},
): Promise<HttpResult> {
  return postForm(`${server.url}/revoke`, { token, ...extra }, { basic: [caller.client_id, caller.client_secret] });
}

export async function fetchJwks(server: RunningServer): Promise<{ keys: Array<Record<string, unknown>> }> {
  const res = await fetch(`${server.url}/jwks`);
  if (res.status !== 200) throw new Error(`GET /jwks -> ${res.status}`);
  return (await res.json()) as { keys: Array<Record<string, unknown>> };
}

export async function jwksKids(server: RunningServer): Promise<string[]> {
  return (await fetchJwks(server)).keys.map((k) => String(k.kid));
}

/**
 * Verifies an access token the way a resource server would: fresh JWKS from /jwks, RFC 9068 typ, issuer, audience.
 * `currentDate` lets a test verify at the server's fake time.
 */
export async function verifyAccessToken(
  server: RunningServer,
  token: string,
  opts: { audience?: string; currentDate?: Date } = {},
): Promise<{ payload: JWTPayload & Record<string, unknown>; kid: string | undefined; alg: string }> {
  const jwks = createLocalJWKSet((await fetchJwks(server)) as never);
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer: server.issuer,
    typ: 'at+jwt',
    ...(opts.audience ? { audience: opts.audience } : {}),
    ...(opts.currentDate ? { currentDate: opts.currentDate } : {}),
  });
  return {
    payload: payload as JWTPayload & Record<string, unknown>,
    kid: protectedHeader.kid,
    alg: protectedHeader.alg,
  };
}

export function kidOf(token: string): string | undefined {
  return decodeProtectedHeader(token).kid;
}

export function claimsOf(token: string): JWTPayload & Record<string, unknown> {
  return decodeJwt(token) as JWTPayload & Record<string, unknown>;
}

export function isExactlyInactive(r: HttpResult): boolean {
  return r.status === 200 && r.text.length > 0 && JSON.stringify(r.json) === '{"active":false}';
}
