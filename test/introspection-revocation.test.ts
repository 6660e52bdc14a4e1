import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API, BILLING, baseConfig, claimsOf, getToken, introspect, postForm, revoke } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

let server: RunningServer;
let clients: ReturnType<typeof baseConfig>['clients'];
const insecure = { [oauth.allowInsecureRequests]: true } as const;

beforeAll(async () => {
  const base = baseConfig();
  clients = base.clients;
  server = await startServer(base.config);
});

afterAll(async () => {
  await server?.close();
});

function expectInactive(r: { status: number; text: string; headers: Headers }) {
  expect(r.status, r.text).toBe(200);
  // Exactly {"active":false}: nothing else may leak about an inactive token (RFC 7662 §2.2).
  expect(JSON.parse(r.text)).toStrictEqual({ active: false });
  expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
}

describe('introspection (RFC 7662)', () => {
  it('active token: all fields, matching the JWT', async () => {
    const { access_token } = await getToken(server, clients.svc, { scope: 'orders:read' });
    const claims = claimsOf(access_token);
    const r = await introspect(server, clients.svc, access_token);
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get('content-type') ?? '').toMatch(/^application\/json/);
    expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
    const b = r.json!;
    expect(b.active).toBe(true);
    expect(b.client_id).toBe('svc');
    expect(b.scope).toBe('orders:read');
    expect(b.sub).toBe('svc');
    expect(b.iss).toBe(server.issuer);
    expect(b.aud === API || (Array.isArray(b.aud) && b.aud.includes(API))).toBe(true);
    expect(b.jti).toBe(claims.jti);
    expect(b.exp).toBe(claims.exp);
    expect(b.iat).toBe(claims.iat);
    if (b.token_type !== undefined) expect(String(b.token_type).toLowerCase()).toMatch(/bearer|access_token/);
  });

  it('works through oauth4webapi and openid-client', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const as = await oauth.processDiscoveryResponse(
      new URL(server.issuer),
      await oauth.discoveryRequest(new URL(server.issuer), { algorithm: 'oauth2', ...insecure }),
    );
    const res = await oauth.introspectionRequest(
      as,
      { client_id: 'api-rs' },
      oauth.ClientSecretBasic(clients.apiRs.client_secret),
      access_token,
      insecure,
    );
    const body = await oauth.processIntrospectionResponse(as, { client_id: 'api-rs' }, res);
    expect(body.active).toBe(true);
    expect(body.client_id).toBe('svc');

    const config = await client.discovery(
      new URL(server.issuer),
      'svc',
      undefined,
      client.ClientSecretBasic(clients.svc.client_secret),
      {
        execute: [client.allowInsecureRequests],
      },
    );
    const ir = await client.tokenIntrospection(config, access_token);
    expect(ir.active).toBe(true);
    await client.tokenRevocation(config, access_token);
    const after = await client.tokenIntrospection(config, access_token);
    expect(after).toMatchObject({ active: false });
  });

  it('a resource server whose resources include the aud sees the token', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await introspect(server, clients.apiRs, access_token);
    expect(r.json?.active, r.text).toBe(true);
  });

  it('a caller whose resources do not include the aud gets {"active":false}', async () => {
    const { access_token } = await getToken(server, clients.svc);
    expectInactive(await introspect(server, clients.billing, access_token));
    // ...while the token is active for its own client.
    expect((await introspect(server, clients.svc, access_token)).json?.active).toBe(true);
  });

  it('token_type_hint that does not match still finds the token (RFC 7662 §2.1)', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await introspect(server, clients.svc, access_token, { token_type_hint: 'refresh_token' });
    expect(r.json?.active, r.text).toBe(true);
    const r2 = await introspect(server, clients.svc, access_token, { token_type_hint: 'access_token' });
    expect(r2.json?.active, r2.text).toBe(true);
  });

  it('garbage tokens are exactly {"active":false}', async () => {
    for (const t of ['garbage', 'a.b.c', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', 'x'.repeat(3000), 'ünïcode']) {
      expectInactive(await introspect(server, clients.svc, t));
    }
  });

  it('a token signed with a forged key is inactive', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const [h, p] = access_token.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    claims.scope = 'orders:read orders:write admin';
    const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${access_token.split('.')[2]}`;
    expectInactive(await introspect(server, clients.svc, forged));
  });

  it('missing token parameter -> invalid_request', async () => {
    const r = await postForm(
      `${server.url}/introspect`,
      {},
      { basic: [clients.svc.client_id, clients.svc.client_secret] },
    );
    expect(r.status, r.text).toBe(400);
    expect(r.json?.error).toBe('invalid_request');
  });

  it('unauthenticated caller -> 401 invalid_client', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await postForm(`${server.url}/introspect`, { token: access_token });
    expect(r.status, r.text).toBe(401);
    expect(r.json?.error).toBe('invalid_client');
    expect(r.text).not.toContain('"active"');
  });

  it('wrong secret -> 401 invalid_client with WWW-Authenticate', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await postForm(
      `${server.url}/introspect`,
      { token: access_token },
      { basic: ['svc', 'wrong-secret-wrong-secret'] },
    );
    expect(r.status, r.text).toBe(401);
    expect(r.json?.error).toBe('invalid_client');
    expect(r.headers.get('www-authenticate') ?? '').toMatch(/^Basic\b/i);
  });
});

describe('revocation (RFC 7009)', () => {
  it('revoke then introspect -> inactive; 200 with no-store', async () => {
    const { access_token } = await getToken(server, clients.svc);
    expect((await introspect(server, clients.svc, access_token)).json?.active).toBe(true);
    const r = await revoke(server, clients.svc, access_token);
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
    expectInactive(await introspect(server, clients.svc, access_token));
    // Also inactive for the resource server.
    expectInactive(await introspect(server, clients.apiRs, access_token));
  });

  it('revoking twice is fine', async () => {
    const { access_token } = await getToken(server, clients.svc);
    expect((await revoke(server, clients.svc, access_token)).status).toBe(200);
    expect((await revoke(server, clients.svc, access_token)).status).toBe(200);
    expectInactive(await introspect(server, clients.svc, access_token));
  });

  it('revoking only affects that token', async () => {
    const a = await getToken(server, clients.svc);
    const b = await getToken(server, clients.svc);
    await revoke(server, clients.svc, a.access_token);
    expectInactive(await introspect(server, clients.svc, a.access_token));
    expect((await introspect(server, clients.svc, b.access_token)).json?.active).toBe(true);
  });

  it("revoking someone else's token does nothing (still 200)", async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await revoke(server, clients.apiRs, access_token);
    expect(r.status, r.text).toBe(200);
    expect((await introspect(server, clients.svc, access_token)).json?.active).toBe(true);
    const r2 = await revoke(server, clients.billing, access_token);
    expect(r2.status).toBe(200);
    expect((await introspect(server, clients.svc, access_token)).json?.active).toBe(true);
  });

  it('token_type_hint=access_token revokes', async () => {
    const { access_token } = await getToken(server, clients.svc);
    expect((await revoke(server, clients.svc, access_token, { token_type_hint: 'access_token' })).status).toBe(200);
    expectInactive(await introspect(server, clients.svc, access_token));
  });

  it('token_type_hint=refresh_token on an access token still revokes it (search extends, RFC 7009 §2.1)', async () => {
    const { access_token } = await getToken(server, clients.svc);
    expect((await revoke(server, clients.svc, access_token, { token_type_hint: 'refresh_token' })).status).toBe(200);
    expectInactive(await introspect(server, clients.svc, access_token));
  });

  it('unsupported token_type_hint is handled (200 ignoring it, or 400 unsupported_token_type), never 5xx', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await revoke(server, clients.svc, access_token, { token_type_hint: 'urn:example:weird' });
    if (r.status === 200) {
      expectInactive(await introspect(server, clients.svc, access_token));
    } else {
      expect(r.status, r.text).toBe(400);
      expect(r.json?.error).toBe('unsupported_token_type');
    }
  });

  it('revoke of garbage -> 200', async () => {
    for (const t of ['garbage', 'a.b.c', 'x'.repeat(2000)]) {
      const r = await revoke(server, clients.svc, t);
      expect(r.status, r.text).toBe(200);
    }
  });

  it('revoke without client authentication -> 401 invalid_client', async () => {
    const { access_token } = await getToken(server, clients.svc);
    const r = await postForm(`${server.url}/revoke`, { token: access_token });
    expect(r.status, r.text).toBe(401);
    expect(r.json?.error).toBe('invalid_client');
    expect((await introspect(server, clients.svc, access_token)).json?.active).toBe(true);
  });

  it('revoke without token -> invalid_request', async () => {
    const r = await postForm(`${server.url}/revoke`, {}, { basic: [clients.svc.client_id, clients.svc.client_secret] });
    expect(r.status, r.text).toBe(400);
    expect(r.json?.error).toBe('invalid_request');
  });
});

describe('client_secret_post callers', () => {
  it('introspect and revoke with credentials in the body', async () => {
    const p = clients.poster;
    const creds = { client_id: p.client_id, client_secret: p.client_secret };
    const r = await postForm(`${server.url}/token`, { grant_type: 'client_credentials', ...creds });
    expect(r.status, r.text).toBe(200);
    const at = String(r.json!.access_token);
    expect((await postForm(`${server.url}/introspect`, { token: at, ...creds })).json?.active).toBe(true);
    expect((await postForm(`${server.url}/revoke`, { token: at, ...creds })).status).toBe(200);
    expectInactive(await postForm(`${server.url}/introspect`, { token: at, ...creds }));
  });
});

describe('administrative revocation (cli)', () => {
  it("revoke --client kills that client's earlier tokens only; later tokens work", async () => {
    const before = await getToken(server, clients.svc);
    const other = await getToken(server, clients.multi, { resource: API });
    const r = await server.cli(['revoke', '--client', 'svc', '--reason', 'test']);
    expect(r.code, r.stderr).toBe(0);
    expectInactive(await introspect(server, clients.svc, before.access_token));
    expectInactive(await introspect(server, clients.apiRs, before.access_token));
    expect((await introspect(server, clients.multi, other.access_token)).json?.active).toBe(true);
    // A token clearly issued after the revocation is not covered by it.
    await server.advanceClock(2);
    const after = await getToken(server, clients.svc);
    expect((await introspect(server, clients.svc, after.access_token)).json?.active).toBe(true);
  });

  it('revoke --jti kills exactly that token', async () => {
    const a = await getToken(server, clients.multi, { resource: API });
    const b = await getToken(server, clients.multi, { resource: API });
    const r = await server.cli(['revoke', '--jti', String(claimsOf(a.access_token).jti)]);
    expect(r.code, r.stderr).toBe(0);
    expectInactive(await introspect(server, clients.multi, a.access_token));
    expect((await introspect(server, clients.multi, b.access_token)).json?.active).toBe(true);
  });

  it('revoke needs exactly one target', async () => {
    const r = await server.cli(['revoke']);
    expect(r.code).not.toBe(0);
    const r2 = await server.cli(['revoke', '--jti', 'x', '--client', 'svc']);
    expect(r2.code).not.toBe(0);
  });
});

describe('lifetimes (fake clock)', () => {
  it('an expired token is exactly {"active":false}', async () => {
    const { access_token } = await getToken(server, clients.multi, { resource: BILLING });
    expect((await introspect(server, clients.multi, access_token)).json?.active).toBe(true);
    await server.advanceClock(590);
    expect((await introspect(server, clients.multi, access_token)).json?.active).toBe(true);
    await server.advanceClock(11);
    expectInactive(await introspect(server, clients.multi, access_token));
    // Tokens issued after the jump are fine (the clock moves, nothing else breaks).
    const fresh = await getToken(server, clients.multi, { resource: BILLING });
    expect((await introspect(server, clients.multi, fresh.access_token)).json?.active).toBe(true);
    expect(claimsOf(fresh.access_token).iat).toBeGreaterThanOrEqual(Math.floor(Date.now() / 1000) + 600);
  });
});
