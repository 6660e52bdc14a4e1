import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

let server: RunningServer;
let clients: ReturnType<typeof baseConfig>['clients'];

beforeAll(async () => {
  const base = baseConfig();
  clients = base.clients;
  server = await startServer(base.config);
});

afterAll(async () => {
  await server?.close();
});

const insecure = { [oauth.allowInsecureRequests]: true } as const;

/** Checks shared by both metadata documents. */
function checkMetadata(as: oauth.AuthorizationServer) {
  expect(as.issuer).toBe(server.issuer);
  for (const ep of ['token_endpoint', 'introspection_endpoint', 'revocation_endpoint', 'jwks_uri'] as const) {
    expect(as[ep], ep).toEqual(expect.any(String));
    // Endpoints live under the issuer (same origin) and are absolute URLs.
    expect(new URL(as[ep] as string).origin, ep).toBe(new URL(server.issuer).origin);
  }
  expect(as.grant_types_supported).toEqual(expect.arrayContaining(['client_credentials']));
  expect(as.grant_types_supported).not.toContain('password');
  expect(as.grant_types_supported).not.toContain('implicit');
  expect(as.token_endpoint_auth_methods_supported).toEqual(
    expect.arrayContaining(['client_secret_basic', 'client_secret_post', 'private_key_jwt']),
  );
  // Assertion algorithms: never none or HMAC (RFC 7523 with a public-key allowlist).
  for (const k of [
    'token_endpoint_auth_signing_alg_values_supported',
    'introspection_endpoint_auth_signing_alg_values_supported',
    'revocation_endpoint_auth_signing_alg_values_supported',
  ] as const) {
    for (const alg of (as[k] as string[] | undefined) ?? []) expect(alg, k).not.toMatch(/^(none|HS\d+)$/i);
  }
  // Introspection is for resource servers: always authenticated. Revocation accepts public clients (RFC 7009
  // §2.1: they identify with client_id and may revoke only their own tokens).
  if (as.introspection_endpoint_auth_methods_supported !== undefined)
    expect(as.introspection_endpoint_auth_methods_supported).not.toContain('none');
  if (as.scopes_supported !== undefined)
    expect(as.scopes_supported).toEqual(expect.arrayContaining(['orders:read', 'orders:write', 'invoices:read']));
  // OAuth 2.1: PKCE with S256 only.
  if (as.code_challenge_methods_supported !== undefined)
    expect(as.code_challenge_methods_supported).not.toContain('plain');
  // OAuth 2.1: no implicit-style response types (anything containing "token" but not only "code").
  for (const rt of as.response_types_supported ?? []) {
    expect(rt.split(' '), `response_type "${rt}"`).not.toContain('token');
  }
  // If the server does not offer authorization_code, it must not announce response types that cannot work.
  if (!as.grant_types_supported?.includes('authorization_code')) {
    expect(as.response_types_supported ?? []).toEqual([]);
    expect(as.authorization_endpoint).toBeUndefined();
  }
}

describe('discovery', () => {
  it('RFC 8414 /.well-known/oauth-authorization-server via oauth4webapi (oauth2 algorithm)', async () => {
    const res = await oauth.discoveryRequest(new URL(server.issuer), { algorithm: 'oauth2', ...insecure });
    const as = await oauth.processDiscoveryResponse(new URL(server.issuer), res);
    checkMetadata(as);
  });

  it('OpenID /.well-known/openid-configuration via oauth4webapi (oidc algorithm)', async () => {
    const res = await oauth.discoveryRequest(new URL(server.issuer), { algorithm: 'oidc', ...insecure });
    const as = await oauth.processDiscoveryResponse(new URL(server.issuer), res);
    checkMetadata(as);
  });

  it('both documents agree on the endpoints', async () => {
    const a = (await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json()) as Record<
      string,
      unknown
    >;
    const b = (await (await fetch(`${server.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    for (const k of ['issuer', 'token_endpoint', 'introspection_endpoint', 'revocation_endpoint', 'jwks_uri']) {
      expect(a[k], k).toBe(b[k]);
    }
  });

  it('metadata is JSON with a JSON content type', async () => {
    const res = await fetch(`${server.url}/.well-known/oauth-authorization-server`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('the announced endpoints actually work (jwks 200, token endpoint answers OAuth errors)', async () => {
    const res = await oauth.discoveryRequest(new URL(server.issuer), { algorithm: 'oauth2', ...insecure });
    const as = await oauth.processDiscoveryResponse(new URL(server.issuer), res);
    const jwks = await fetch(as.jwks_uri!);
    expect(jwks.status).toBe(200);
    const body = (await jwks.json()) as { keys: unknown[] };
    expect(body.keys.length).toBeGreaterThan(0);
    const tok = await fetch(as.token_endpoint!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials',
    });
    expect(tok.status).toBe(401);
    expect(((await tok.json()) as { error: string }).error).toBe('invalid_client');
  });

  it('openid-client discovery then a client_credentials grant', async () => {
    const config = await client.discovery(
      new URL(server.issuer),
      clients.svc.client_id,
      undefined,
      client.ClientSecretBasic(clients.svc.client_secret),
      { execute: [client.allowInsecureRequests] },
    );
    const md = config.serverMetadata();
    expect(md.issuer).toBe(server.issuer);
    expect(md.token_endpoint).toEqual(expect.any(String));
    const tokens = await client.clientCredentialsGrant(config, { scope: 'orders:read' });
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
  });

  it('unknown well-known path is 404, not 5xx', async () => {
    const res = await fetch(`${server.url}/.well-known/nope`);
    expect(res.status).toBe(404);
  });
});
