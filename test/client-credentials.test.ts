import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  API,
  BILLING,
  baseConfig,
  basicAuth,
  claimsOf,
  type HttpResult,
  postForm,
  secret,
  type TestClient,
  toResult,
  verifyAccessToken,
} from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

let server: RunningServer;
const disabledSecret = secret();
let clients: ReturnType<typeof baseConfig>['clients'];
let as: oauth.AuthorizationServer;
const insecure = { [oauth.allowInsecureRequests]: true } as const;

// private_key_jwt clients: pkjwt (key A) and pkjwt-other (key B).
type PrivateKey = Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
let keyA: PrivateKey;
let keyB: PrivateKey;
const kidA = 'client-key-a';
const kidB = 'client-key-b';

beforeAll(async () => {
  const a = await generateKeyPair('ES256', { extractable: true });
  const b = await generateKeyPair('ES256', { extractable: true });
  keyA = a.privateKey;
  keyB = b.privateKey;
  const jwkA = { ...(await exportJWK(a.publicKey)), kid: kidA, alg: 'ES256', use: 'sig' };
  const jwkB = { ...(await exportJWK(b.publicKey)), kid: kidB, alg: 'ES256', use: 'sig' };
  const base = baseConfig();
  clients = base.clients;
  (base.config.clients as unknown[]).push(
    {
      client_id: 'pkjwt',
      token_endpoint_auth_method: 'private_key_jwt',
      scope: 'orders:read',
      jwks: { keys: [jwkA] },
    },
    {
      client_id: 'disabled-svc',
      client_secret: disabledSecret,
      scope: 'orders:read',
      disabled: true,
    },
    {
      client_id: 'pkjwt-other',
      token_endpoint_auth_method: 'private_key_jwt',
      scope: 'orders:read',
      jwks: { keys: [jwkB] },
    },
  );
  server = await startServer(base.config);
  as = await oauth.processDiscoveryResponse(
    new URL(server.issuer),
    await oauth.discoveryRequest(new URL(server.issuer), { algorithm: 'oauth2', ...insecure }),
  );
});

afterAll(async () => {
  await server?.close();
});

const token = (
  body: Record<string, string> | string | [string, string][],
  c?: TestClient,
  headers?: Record<string, string>,
) =>
  postForm(`${server.url}/token`, body, {
    ...(c ? { basic: [c.client_id, c.client_secret] as [string, string] } : {}),
    ...(headers ? { headers } : {}),
  });

function expectOAuthError(r: HttpResult, status: number, error: string) {
  expect({ status: r.status, error: r.json?.error }, r.text).toEqual({ status, error });
  expect(typeof r.json?.error_description === 'string' || r.json?.error_description === undefined).toBe(true);
  expect(r.headers.get('content-type') ?? '').toMatch(/^application\/json/);
  expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
}

/** Full check of an RFC 9068 access token for client_credentials. */
async function checkAccessToken(accessToken: string, clientId: string, aud: string, scope: string) {
  const { payload, kid } = await verifyAccessToken(server, accessToken, { audience: aud });
  expect(kid).toEqual(expect.any(String));
  expect(payload.iss).toBe(server.issuer);
  expect(
    payload.aud === aud || (Array.isArray(payload.aud) && payload.aud.length === 1 && payload.aud[0] === aud),
  ).toBe(true);
  expect(payload.sub).toBe(clientId);
  expect(payload.client_id).toBe(clientId);
  expect(String(payload.scope).split(' ').sort()).toEqual(scope.split(' ').sort());
  expect(payload.jti).toEqual(expect.any(String));
  expect(String(payload.jti).length).toBeGreaterThanOrEqual(16);
  expect(payload.iat).toEqual(expect.any(Number));
  expect(payload.exp! - payload.iat!).toBe(600);
  // iat is "now" (the fake clock is not advanced in this file)
  expect(Math.abs(payload.iat! - Date.now() / 1000)).toBeLessThan(60);
  return payload;
}

describe('client_credentials with oauth4webapi', () => {
  it('client_secret_basic: token response and RFC 9068 JWT', async () => {
    const res = await oauth.clientCredentialsGrantRequest(
      as,
      { client_id: clients.svc.client_id },
      oauth.ClientSecretBasic(clients.svc.client_secret),
      { scope: 'orders:read' },
      insecure,
    );
    expect(res.headers.get('cache-control') ?? '').toMatch(/no-store/);
    const body = await oauth.processClientCredentialsResponse(as, { client_id: clients.svc.client_id }, res);
    expect(body.token_type.toLowerCase()).toBe('bearer');
    expect(body.expires_in).toBe(600);
    await checkAccessToken(body.access_token, 'svc', API, 'orders:read');
  });

  it('client_secret_post', async () => {
    const res = await oauth.clientCredentialsGrantRequest(
      as,
      { client_id: clients.poster.client_id },
      oauth.ClientSecretPost(clients.poster.client_secret),
      { scope: 'orders:read' },
      insecure,
    );
    const body = await oauth.processClientCredentialsResponse(as, { client_id: 'poster' }, res);
    await checkAccessToken(body.access_token, 'poster', API, 'orders:read');
  });

  it('private_key_jwt with an ES256 key from the client jwks', async () => {
    const res = await oauth.clientCredentialsGrantRequest(
      as,
      { client_id: 'pkjwt' },
      oauth.PrivateKeyJwt({ key: keyA, kid: kidA }),
      { scope: 'orders:read' },
      insecure,
    );
    const body = await oauth.processClientCredentialsResponse(as, { client_id: 'pkjwt' }, res);
    await checkAccessToken(body.access_token, 'pkjwt', API, 'orders:read');
  });

  it('a wrong secret surfaces as an invalid_client error in the library', async () => {
    const res = await oauth.clientCredentialsGrantRequest(
      as,
      { client_id: 'svc' },
      oauth.ClientSecretBasic('definitely-not-the-secret'),
      {},
      insecure,
    );
    // 401 + WWW-Authenticate: oauth4webapi surfaces the challenge; the body still carries the OAuth error.
    const err = await oauth.processClientCredentialsResponse(as, { client_id: 'svc' }, res).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    const e = err as { status?: number; error?: string; response?: Response };
    expect(e.status).toBe(401);
    if (e instanceof oauth.WWWAuthenticateChallengeError) {
      expect(e.cause[0]?.scheme).toBe('basic');
      expect(((await e.response.json()) as { error: string }).error).toBe('invalid_client');
    } else {
      expect(e.error).toBe('invalid_client');
    }
  });
});

describe('client_credentials with openid-client', () => {
  it('clientCredentialsGrant with client_secret_basic and a resource indicator', async () => {
    const config = await client.discovery(
      new URL(server.issuer),
      'multi',
      undefined,
      client.ClientSecretBasic(clients.multi.client_secret),
      {
        execute: [client.allowInsecureRequests],
      },
    );
    const tokens = await client.clientCredentialsGrant(config, { resource: BILLING });
    expect(tokens.expires_in).toBe(600); // the raw field: expiresIn() counts down
    await checkAccessToken(tokens.access_token, 'multi', BILLING, 'invoices:read');
  });

  it('clientCredentialsGrant with client_secret_post', async () => {
    const config = await client.discovery(
      new URL(server.issuer),
      'poster',
      undefined,
      client.ClientSecretPost(clients.poster.client_secret),
      {
        execute: [client.allowInsecureRequests],
      },
    );
    const tokens = await client.clientCredentialsGrant(config, { scope: 'orders:read' });
    await checkAccessToken(tokens.access_token, 'poster', API, 'orders:read');
  });
});

describe('scope and resource rules', () => {
  it('one-resource client gets its resource by default and all its scopes when scope is omitted', async () => {
    const r = await token({ grant_type: 'client_credentials' }, clients.svc);
    expect(r.status, r.text).toBe(200);
    await checkAccessToken(String(r.json!.access_token), 'svc', API, 'orders:read orders:write');
    expect(String(r.json!.scope).split(' ').sort()).toEqual(['orders:read', 'orders:write']);
  });

  it('the resource indicator selects aud', async () => {
    const r = await token({ grant_type: 'client_credentials', resource: API, scope: 'orders:read' }, clients.multi);
    expect(r.status, r.text).toBe(200);
    await checkAccessToken(String(r.json!.access_token), 'multi', API, 'orders:read');
    const r2 = await token({ grant_type: 'client_credentials', resource: BILLING }, clients.multi);
    expect(r2.status, r2.text).toBe(200);
    await checkAccessToken(String(r2.json!.access_token), 'multi', BILLING, 'invoices:read');
  });

  it('every token has its own jti', async () => {
    const jtis = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const r = await token({ grant_type: 'client_credentials' }, clients.svc);
      jtis.add(String(claimsOf(String(r.json!.access_token)).jti));
    }
    expect(jtis.size).toBe(5);
  });

  it('invalid_scope: a scope the client is not allowed', async () => {
    const p = clients.poster;
    expectOAuthError(
      await token({
        grant_type: 'client_credentials',
        scope: 'orders:write',
        client_id: p.client_id,
        client_secret: p.client_secret,
      }),
      400,
      'invalid_scope',
    );
    expectOAuthError(
      await token({ grant_type: 'client_credentials', scope: 'invoices:read' }, clients.svc),
      400,
      'invalid_scope',
    );
    expectOAuthError(
      await token({ grant_type: 'client_credentials', scope: 'no-such-scope' }, clients.svc),
      400,
      'invalid_scope',
    );
  });

  it('invalid_scope: an allowed scope that belongs to another resource', async () => {
    const r = await token({ grant_type: 'client_credentials', resource: API, scope: 'invoices:read' }, clients.multi);
    expectOAuthError(r, 400, 'invalid_scope');
  });

  it('invalid_target: unknown resource', async () => {
    const r = await token({ grant_type: 'client_credentials', resource: 'https://unknown.example.com' }, clients.svc);
    expectOAuthError(r, 400, 'invalid_target');
  });

  it('invalid_target: a known resource the client may not use', async () => {
    expectOAuthError(
      await token({ grant_type: 'client_credentials', resource: BILLING }, clients.svc),
      400,
      'invalid_target',
    );
  });

  it('invalid_target: several-resource client without resource', async () => {
    expectOAuthError(
      await token({ grant_type: 'client_credentials', scope: 'orders:read' }, clients.multi),
      400,
      'invalid_target',
    );
  });

  it('invalid_target: resource that is not an absolute URI', async () => {
    const r = await token({ grant_type: 'client_credentials', resource: 'api' }, clients.svc);
    expect(r.status).toBe(400);
    expect(['invalid_target', 'invalid_request']).toContain(r.json?.error);
  });

  it('resource with a fragment is refused (RFC 8707 §2)', async () => {
    const r = await token({ grant_type: 'client_credentials', resource: `${API}#frag` }, clients.svc);
    expect(r.status, r.text).toBe(400);
    expect(['invalid_target', 'invalid_request']).toContain(r.json?.error);
  });

  it('two resource parameters are refused, not silently narrowed to one', async () => {
    const r = await token(
      [
        ['grant_type', 'client_credentials'],
        ['resource', API],
        ['resource', BILLING],
        ['scope', 'orders:read'],
      ],
      clients.multi,
    );
    expect(r.status, r.text).toBe(400);
    expect(['invalid_target', 'invalid_request']).toContain(r.json?.error);
  });

  it('unauthorized_client: grant not allowed for the client', async () => {
    expectOAuthError(await token({ grant_type: 'client_credentials' }, clients.nogrant), 400, 'unauthorized_client');
  });

  it.each(['password', 'implicit', 'foo', 'urn:example:unknown'])('unsupported_grant_type: %s', async (gt) => {
    const r = await token({ grant_type: gt, username: 'alice', password: 'pw' }, clients.svc);
    expectOAuthError(r, 400, 'unsupported_grant_type');
  });

  it('missing grant_type is invalid_request', async () => {
    expectOAuthError(await token({ scope: 'orders:read' }, clients.svc), 400, 'invalid_request');
  });
});

describe('client authentication failures', () => {
  it('wrong secret with Basic -> 401 invalid_client + WWW-Authenticate: Basic', async () => {
    const r = await token(
      { grant_type: 'client_credentials' },
      { client_id: 'svc', client_secret: 'wrong-secret-wrong-secret' },
    );
    expectOAuthError(r, 401, 'invalid_client');
    expect(r.headers.get('www-authenticate') ?? '').toMatch(/^Basic\b/i);
  });

  it('unknown client with Basic -> 401 invalid_client', async () => {
    const r = await token(
      { grant_type: 'client_credentials' },
      { client_id: 'nobody', client_secret: 'whatever-whatever-1' },
    );
    expectOAuthError(r, 401, 'invalid_client');
    expect(r.headers.get('www-authenticate') ?? '').toMatch(/^Basic\b/i);
  });

  it('wrong secret via client_secret_post -> 401 invalid_client', async () => {
    const r = await token({
      grant_type: 'client_credentials',
      client_id: 'poster',
      client_secret: 'wrong-secret-wrong-secret',
    });
    expectOAuthError(r, 401, 'invalid_client');
  });

  it('unknown client via client_secret_post -> 401 invalid_client', async () => {
    const r = await token({
      grant_type: 'client_credentials',
      client_id: 'nobody',
      client_secret: 'wrong-secret-wrong-secret',
    });
    expectOAuthError(r, 401, 'invalid_client');
  });

  it('no client authentication at all -> 401 invalid_client', async () => {
    expectOAuthError(await token({ grant_type: 'client_credentials' }), 401, 'invalid_client');
  });

  it('client_id alone (no secret) for a confidential client -> 401 invalid_client', async () => {
    expectOAuthError(await token({ grant_type: 'client_credentials', client_id: 'svc' }), 401, 'invalid_client');
  });

  it('a client registered for client_secret_post cannot use Basic (auth method enforced)', async () => {
    const r = await token({ grant_type: 'client_credentials' }, clients.poster);
    expectOAuthError(r, 401, 'invalid_client');
  });

  it('a client registered for client_secret_basic cannot send its secret in the body', async () => {
    const r = await token({
      grant_type: 'client_credentials',
      client_id: 'svc',
      client_secret: clients.svc.client_secret,
    });
    expectOAuthError(r, 401, 'invalid_client');
  });

  it('a disabled client -> 401 invalid_client', async () => {
    const r = await token(
      { grant_type: 'client_credentials' },
      { client_id: 'disabled-svc', client_secret: disabledSecret },
    );
    expectOAuthError(r, 401, 'invalid_client');
  });

  it('two authentication methods at once -> invalid_request (RFC 6749 §2.3)', async () => {
    const r = await token(
      { grant_type: 'client_credentials', client_id: 'svc', client_secret: clients.svc.client_secret },
      clients.svc,
    );
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(['invalid_request', 'invalid_client']).toContain(r.json?.error);
  });
});

describe('request format', () => {
  it('repeated parameter -> invalid_request', async () => {
    const r = await token('grant_type=client_credentials&scope=orders:read&scope=orders:write', clients.svc);
    expectOAuthError(r, 400, 'invalid_request');
    const r2 = await token('grant_type=client_credentials&grant_type=client_credentials', clients.svc);
    expectOAuthError(r2, 400, 'invalid_request');
  });

  it('JSON body -> invalid_request (or 415 with an OAuth error body)', async () => {
    const res = await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: basicAuth('svc', clients.svc.client_secret) },
      body: JSON.stringify({ grant_type: 'client_credentials' }),
    });
    const r = await toResult(res);
    expect([400, 415], r.text).toContain(r.status);
    expect(r.json?.error).toBe('invalid_request');
    expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
  });

  it('oversized body -> 413 with an error JSON', async () => {
    const r = await token(`grant_type=client_credentials&scope=${'a'.repeat(40_000)}`, clients.svc);
    expect(r.status, r.text).toBe(413);
    expect(r.json?.error).toEqual(expect.any(String));
  });

  it('GET /token is not a token request', async () => {
    const res = await fetch(`${server.url}/token?grant_type=client_credentials`, {
      headers: { authorization: basicAuth('svc', clients.svc.client_secret) },
    });
    expect([404, 405]).toContain(res.status);
  });

  it('Cache-Control: no-store on success', async () => {
    const r = await token({ grant_type: 'client_credentials' }, clients.svc);
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
  });
});

describe('garbage never produces a 5xx', () => {
  const big = 'x'.repeat(5000);
  const cases: Array<[string, () => Promise<Response>]> = [
    [
      'bad base64 in Basic',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Basic !!!not-base64***' },
          body: 'grant_type=client_credentials',
        }),
    ],
    [
      'Basic without colon',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: `Basic ${Buffer.from('svc').toString('base64')}`,
          },
          body: 'grant_type=client_credentials',
        }),
    ],
    [
      'Basic with bad percent-encoding',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: `Basic ${Buffer.from('%ZZ:%E0%A4%A').toString('base64')}`,
          },
          body: 'grant_type=client_credentials',
        }),
    ],
    [
      'Bearer instead of Basic',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: 'Bearer abc' },
          body: 'grant_type=client_credentials',
        }),
    ],
    [
      'empty body',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('svc', 'x'.repeat(20)),
          },
          body: '',
        }),
    ],
    ['no content type, no body', () => fetch(`${server.url}/token`, { method: 'POST' })],
    [
      'huge parameter (over parameter_bytes, under body_bytes)',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('svc', clients.svc.client_secret),
          },
          body: `grant_type=client_credentials&scope=${big}`,
        }),
    ],
    [
      'huge client_id',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: `grant_type=client_credentials&client_id=${big}&client_secret=${big.slice(0, 3000)}`,
        }),
    ],
    [
      'unicode everywhere',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('sérvice😀', 'sécret😀😀😀😀😀😀😀😀'),
          },
          body: new URLSearchParams({
            grant_type: 'client_credentials',
            scope: 'ördérs:réad 😀',
            resource: 'https://ápi.example.com/😀',
          }).toString(),
        }),
    ],
    [
      'unicode scope with valid client',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('svc', clients.svc.client_secret),
          },
          body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'ördérs:réad' }).toString(),
        }),
    ],
    [
      'missing grant_type',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('svc', clients.svc.client_secret),
          },
          body: 'scope=orders:read',
        }),
    ],
    [
      'broken percent-encoding in body',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('svc', clients.svc.client_secret),
          },
          body: 'grant_type=client_credentials&scope=%E0%A4%A&resource=%',
        }),
    ],
    [
      'NUL bytes',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: {
            'content-type': 'application/x-www-form-urlencoded',
            authorization: basicAuth('svc', clients.svc.client_secret),
          },
          body: 'grant_type=client_credentials%00&scope=orders:read%00',
        }),
    ],
    [
      'client_assertion garbage',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: 'grant_type=client_credentials&client_id=pkjwt&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=not.a.jwt',
        }),
    ],
    [
      'client_assertion with wrong type',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: 'grant_type=client_credentials&client_assertion_type=foo&client_assertion=a.b.c',
        }),
    ],
    [
      'text/plain body',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'text/plain' },
          body: 'grant_type=client_credentials',
        }),
    ],
    [
      'malformed JSON body',
      () =>
        fetch(`${server.url}/token`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"grant_type":',
        }),
    ],
  ];
  it.each(cases)('%s -> 4xx with an OAuth error body', async (_name, send) => {
    const r = await toResult(await send());
    expect(r.status, r.text).toBeGreaterThanOrEqual(400);
    expect(r.status, r.text).toBeLessThan(500);
    expect(r.json?.error, r.text).toEqual(expect.any(String));
    // No internals leak into error_description.
    expect(r.text).not.toMatch(/at .*\.ts:\d+|SQLITE|stack|TypeError|ReferenceError/);
  });

  it('the server is still healthy afterwards', async () => {
    const r = await token({ grant_type: 'client_credentials' }, clients.svc);
    expect(r.status).toBe(200);
  });
});

describe('private_key_jwt assertions', () => {
  const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';
  const now = () => Math.floor(Date.now() / 1000);

  async function assertion(
    opts: {
      key?: PrivateKey;
      kid?: string;
      iss?: string;
      sub?: string;
      aud?: string | string[];
      jti?: string | null;
      iat?: number | null;
      exp?: number | null;
    } = {},
  ): Promise<string> {
    const payload: Record<string, unknown> = {
      iss: opts.iss ?? 'pkjwt',
      sub: opts.sub ?? 'pkjwt',
      aud: opts.aud ?? server.issuer,
    };
    if (opts.jti !== null) payload.jti = opts.jti ?? randomUUID();
    if (opts.iat !== null) payload.iat = opts.iat ?? now();
    if (opts.exp !== null) payload.exp = opts.exp ?? now() + 60;
    return new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? kidA }).sign(opts.key ?? keyA);
  }

  const send = (jwt: string, clientId = 'pkjwt') =>
    token({
      grant_type: 'client_credentials',
      client_id: clientId,
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: jwt,
    });

  it('a valid assertion (aud = issuer) works', async () => {
    const r = await send(await assertion());
    expect(r.status, r.text).toBe(200);
  });

  // Only the issuer identifier is accepted as aud: a token endpoint URL (or any other audience) is what the
  // audience-confusion attack on client assertions relies on, so it is refused.
  it('aud = token endpoint URL is refused (issuer identifier only)', async () => {
    const r = await send(await assertion({ aud: String(as.token_endpoint) }));
    expect(r.status, r.text).toBe(401);
    expect(r.json?.error).toBe('invalid_client');
  });
  it('aud = [issuer, other] is refused', async () => {
    const r = await send(await assertion({ aud: [server.issuer, 'https://elsewhere.example'] }));
    expect(r.status, r.text).toBe(401);
  });

  it('client_id may be omitted (taken from the assertion)', async () => {
    const jwt = await assertion();
    const r = await token({
      grant_type: 'client_credentials',
      client_assertion_type: ASSERTION_TYPE,
      client_assertion: jwt,
    });
    expect(r.status, r.text).toBe(200);
  });

  it('wrong aud -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ aud: 'https://other.example.com' })), 401, 'invalid_client');
  });

  it('replayed jti -> invalid_client', async () => {
    const jwt = await assertion();
    const first = await send(jwt);
    expect(first.status, first.text).toBe(200);
    expectOAuthError(await send(jwt), 401, 'invalid_client');
    // A different assertion reusing the jti is a replay too.
    const jti = randomUUID();
    expect((await send(await assertion({ jti }))).status).toBe(200);
    expectOAuthError(await send(await assertion({ jti })), 401, 'invalid_client');
  });

  it('missing jti -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ jti: null })), 401, 'invalid_client');
  });

  it('expired assertion -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ iat: now() - 400, exp: now() - 120 })), 401, 'invalid_client');
  });

  it('missing exp -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ exp: null })), 401, 'invalid_client');
  });

  it('lifetime longer than client_assertion_max_lifetime (5m) -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ iat: now(), exp: now() + 3600 })), 401, 'invalid_client');
  });

  it('iat in the future beyond clock skew -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ iat: now() + 600, exp: now() + 660 })), 401, 'invalid_client');
  });

  it('iss/sub not the client -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ sub: 'svc' })), 401, 'invalid_client');
    expectOAuthError(await send(await assertion({ iss: 'svc' })), 401, 'invalid_client');
  });

  it('alg HS256 -> invalid_client', async () => {
    const jwt = await new SignJWT({
      iss: 'pkjwt',
      sub: 'pkjwt',
      aud: server.issuer,
      jti: randomUUID(),
      iat: now(),
      exp: now() + 60,
    })
      .setProtectedHeader({ alg: 'HS256', kid: kidA })
      .sign(new TextEncoder().encode('a-shared-secret-of-32-bytes-long'));
    expectOAuthError(await send(jwt), 401, 'invalid_client');
  });

  it('alg none -> invalid_client', async () => {
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const jwt = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: 'pkjwt', sub: 'pkjwt', aud: server.issuer, jti: randomUUID(), iat: now(), exp: now() + 60 })}.`;
    expectOAuthError(await send(jwt), 401, 'invalid_client');
  });

  it('signed by a key not in the client jwks (even with its kid) -> invalid_client', async () => {
    expectOAuthError(await send(await assertion({ key: keyB, kid: kidA })), 401, 'invalid_client');
  });

  it("signed by another client's registered key -> invalid_client", async () => {
    expectOAuthError(await send(await assertion({ key: keyB, kid: kidB })), 401, 'invalid_client');
  });

  it('the other client can use its own key (control)', async () => {
    const r = await send(
      await assertion({ key: keyB, kid: kidB, iss: 'pkjwt-other', sub: 'pkjwt-other' }),
      'pkjwt-other',
    );
    expect(r.status, r.text).toBe(200);
  });

  it('client_id parameter that differs from the assertion -> invalid_client', async () => {
    expectOAuthError(await send(await assertion(), 'pkjwt-other'), 401, 'invalid_client');
  });

  it('private_key_jwt also authenticates at the introspection and revocation endpoints (oauth4webapi)', async () => {
    const r = await send(await assertion());
    expect(r.status, r.text).toBe(200);
    const at = String(r.json!.access_token);
    const auth = () => oauth.PrivateKeyJwt({ key: keyA, kid: kidA });
    const ir = await oauth.introspectionRequest(as, { client_id: 'pkjwt' }, auth(), at, insecure);
    const body = await oauth.processIntrospectionResponse(as, { client_id: 'pkjwt' }, ir);
    expect(body.active).toBe(true);
    expect(body.client_id).toBe('pkjwt');
    const rr = await oauth.revocationRequest(as, { client_id: 'pkjwt' }, auth(), at, insecure);
    await oauth.processRevocationResponse(rr);
    const ir2 = await oauth.introspectionRequest(as, { client_id: 'pkjwt' }, auth(), at, insecure);
    expect((await oauth.processIntrospectionResponse(as, { client_id: 'pkjwt' }, ir2)).active).toBe(false);
  });

  it('a secret-based client cannot authenticate with an assertion', async () => {
    const jwt = await assertion({ iss: 'svc', sub: 'svc' });
    expectOAuthError(await send(jwt, 'svc'), 401, 'invalid_client');
  });
});
