/**
 * The token side of sign-in, black-box: authorization_code at /token (single use, bound to client, redirect_uri
 * and verifier, replay revokes), refresh rotation (reuse revokes the family, concurrent use, narrowing, lifetimes),
 * the ID token, userinfo, and RFC 7009 revocation of refresh tokens. openid-client is the relying party.
 */
import { createRemoteJWKSet, jwtVerify } from 'jose';
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { basicAuth, claimsOf, postForm as post } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, API, authorizeUrl, BOB, codeFlow, signInConfig, WEB_CB } from './helpers/signin.ts';

let server: RunningServer;
let svcSecret: string;
let parSecret: string;

beforeAll(async () => {
  const c = signInConfig();
  svcSecret = c.svcSecret;
  parSecret = c.parSecret;
  const clients = c.config.clients as Array<Record<string, unknown>>;
  // web may ask for offline_access (refresh tokens for OpenID requests, OIDC Core §11).
  clients[0]!.scope = 'openid profile email offline_access orders:read orders:write';
  // A confidential web client whose policy gives refresh tokens without offline_access.
  clients.push({
    client_id: 'conf',
    client_secret: c.svcSecret,
    grant_types: ['authorization_code', 'refresh_token'],
    redirect_uris: ['https://conf.example.com/cb'],
    scope: 'openid profile orders:read',
    refresh_token_requires_offline_access: false,
  });
  // The resource server: introspects tokens for API.
  (clients.find((x) => x.client_id === 'svc') as Record<string, unknown>).resources = [API];
  server = await startServer(c.config);
});
afterAll(async () => server?.close());

const FULL = 'openid profile email offline_access orders:read';

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** POST a form to this server; body is the parsed JSON ({} when none). */
async function postForm(_s: RunningServer, path: string, form: Record<string, string>, headers = {}): Promise<Reply> {
  const r = await post(`${server.url}${path}`, form, { headers });
  return { status: r.status, headers: r.headers, body: r.json ?? {} };
}

async function introspectAs(token: string): Promise<Reply> {
  return postForm(server, '/introspect', { token }, { authorization: basicAuth('svc', svcSecret) });
}

/** Signs alice in and returns the code and verifier for web (a fresh browser each time unless given). */
async function getCode(
  over: Record<string, string | undefined> = {},
  b = new Browser(server.url),
  user = ALICE,
): Promise<{ code: string; verifier: string; b: Browser }> {
  const { url, verifier } = authorizeUrl({ scope: FULL, ...over });
  const q = await codeFlow(b, url, user);
  expect(q.code, JSON.stringify(q)).toBeDefined();
  return { code: q.code!, verifier, b };
}

function redeem(code: string, verifier: string, over: Record<string, string> = {}, headers = {}): Promise<Reply> {
  return postForm(
    server,
    '/token',
    {
      grant_type: 'authorization_code',
      client_id: 'web',
      code,
      code_verifier: verifier,
      redirect_uri: WEB_CB,
      ...over,
    },
    headers,
  );
}

function refresh(token: string, over: Record<string, string> = {}): Promise<Reply> {
  return postForm(server, '/token', { grant_type: 'refresh_token', client_id: 'web', refresh_token: token, ...over });
}

const active = async (token: string) => (await introspectAs(token)).body.active === true;

describe('openid-client as the relying party: code + PKCE, ID token, userinfo, refresh, revocation', () => {
  let config: client.Configuration;
  beforeAll(async () => {
    config = await client.discovery(new URL(server.issuer), 'web', undefined, client.None(), {
      execute: [client.allowInsecureRequests],
    });
  });

  it('signs a person in and validates the ID token (nonce, at_hash, auth_time, sid, amr)', async () => {
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: WEB_CB,
      scope: FULL,
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    const b = new Browser(server.url);
    const q = await codeFlow(b, url.href);
    expect(q.iss).toBe(server.issuer);
    const callback = new URL(`${WEB_CB}?${new URLSearchParams(q)}`);
    const tokens = await client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.refresh_token).toBeTruthy();
    expect(tokens.scope?.split(' ').sort()).toEqual(['email', 'openid', 'orders:read', 'profile']);
    const id = tokens.claims()!;
    expect(id.iss).toBe(server.issuer);
    expect(id.aud).toBe('web');
    expect(id.nonce).toBe(nonce);
    expect(typeof id.auth_time).toBe('number');
    expect(typeof id.sid).toBe('string');
    expect(id.amr).toEqual(['pwd']);
    expect(typeof id.at_hash).toBe('string');
    // The ID token verifies against the JWKS with jose too, typ JWT (never at+jwt).
    const jwks = createRemoteJWKSet(new URL(`${server.url}/jwks`));
    const v = await jwtVerify(tokens.id_token!, jwks, { issuer: server.issuer, audience: 'web', typ: 'JWT' });
    expect(v.payload.sub).toBe(id.sub);
    // The access token is for the API and for userinfo, bound to the grant.
    const at = claimsOf(tokens.access_token);
    expect(at.aud).toEqual([API, `${server.issuer}/userinfo`]);
    expect(at.sub).toBe(id.sub);
    expect(typeof at.grant_id).toBe('string');
    expect(at.client_id).toBe('web');

    // userinfo with the access token: the claims its scopes allow.
    const info = await client.fetchUserInfo(config, tokens.access_token, id.sub);
    expect(info).toMatchObject({
      sub: id.sub,
      preferred_username: 'alice',
      name: 'Alice Example',
      email: 'alice@example.com',
    });

    // Refresh: a new pair; the ID token keeps the subject; the old refresh token is spent.
    const r2 = await client.refreshTokenGrant(config, tokens.refresh_token!);
    expect(r2.refresh_token).toBeTruthy();
    expect(r2.refresh_token).not.toBe(tokens.refresh_token);
    expect(r2.claims()?.sub).toBe(id.sub);
    expect(await active(r2.access_token)).toBe(true);

    // Revoking the refresh token (RFC 7009) ends the grant: its access tokens stop working everywhere.
    await client.tokenRevocation(config, r2.refresh_token!, { token_type_hint: 'refresh_token' });
    expect(await active(r2.access_token)).toBe(false);
    expect(await active(tokens.access_token)).toBe(false);
    await expect(client.refreshTokenGrant(config, r2.refresh_token!)).rejects.toMatchObject({
      error: 'invalid_grant',
    });
    await expect(client.fetchUserInfo(config, r2.access_token, id.sub)).rejects.toThrow();
  });

  it('discovery advertises exactly what works', async () => {
    const m = config.serverMetadata();
    expect(m.userinfo_endpoint).toBe(`${server.issuer}/userinfo`);
    expect(m.grant_types_supported).toEqual(expect.arrayContaining(['authorization_code', 'refresh_token']));
    expect(m.id_token_signing_alg_values_supported).toEqual(['ES256']);
    expect(m.subject_types_supported).toEqual(['public']);
    expect(m.scopes_supported).toEqual(expect.arrayContaining(['openid', 'profile', 'email', 'offline_access']));
    expect(m.response_types_supported).toEqual(['code']);
  });
});

describe('authorization codes at /token', () => {
  it('a code is single use: a replay is invalid_grant and revokes everything issued from it', async () => {
    const { code, verifier } = await getCode();
    const first = await redeem(code, verifier);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const at = first.body.access_token as string;
    expect(await active(at)).toBe(true);
    const again = await redeem(code, verifier);
    expect(again.status).toBe(400);
    expect(again.body.error).toBe('invalid_grant');
    expect(again.headers.get('cache-control')).toBe('no-store');
    expect(await active(at)).toBe(false);
    const r = await refresh(first.body.refresh_token as string);
    expect(r.body.error).toBe('invalid_grant');
    const grantId = claimsOf(at).grant_id as string;
    const events = await readEvents(server, 'WHERE grant_id = ?', [grantId]);
    const types = events.map((e) => e.type);
    expect(types).toEqual(
      expect.arrayContaining([
        'grant.created',
        'authorization_code.issued',
        'authorization_code.redeemed',
        'token.issued',
        'refresh_token.issued',
        'authorization_code.replayed',
        'grant.revoked',
      ]),
    );
  });

  it('a replay with a wrong verifier, another client or another redirect_uri revokes nothing', async () => {
    const { code, verifier } = await getCode();
    const ok = await redeem(code, verifier);
    expect(ok.status).toBe(200);
    const at = ok.body.access_token as string;
    const wrongVerifier = await redeem(code, 'x'.repeat(43));
    expect(wrongVerifier.body.error).toBe('invalid_grant');
    const otherClient = await redeem(code, verifier, { client_id: 'par-only' });
    expect(otherClient.status).toBe(401); // par-only must authenticate: invalid_client before the code is looked at
    const otherClientAuthed = await redeem(
      code,
      verifier,
      { client_id: 'par-only' },
      { authorization: basicAuth('par-only', parSecret) },
    );
    expect(otherClientAuthed.status).toBe(400);
    const badRedirect = await redeem(code, verifier, { redirect_uri: 'https://app.example.com/cb2?x=1' });
    expect(badRedirect.body.error).toBe('invalid_grant');
    expect(await active(at)).toBe(true);
  });

  it('is bound to the verifier, the client and the redirect_uri (the code survives failed attempts)', async () => {
    const { code, verifier } = await getCode();
    const cases: Array<[Record<string, string>, string]> = [
      [{ code_verifier: 'y'.repeat(43) }, 'invalid_grant'],
      [{ code_verifier: 'short' }, 'invalid_request'],
      [{ redirect_uri: `${WEB_CB}/` }, 'invalid_grant'],
      [{ code: `${code}x` }, 'invalid_grant'],
    ];
    for (const [over, error] of cases) {
      const r = await redeem(code, verifier, over);
      expect(r.status, JSON.stringify(over)).toBe(400);
      expect(r.body.error, JSON.stringify(over)).toBe(error);
    }
    const noVerifier = await postForm(server, '/token', {
      grant_type: 'authorization_code',
      client_id: 'web',
      code,
      redirect_uri: WEB_CB,
    });
    expect(noVerifier.body.error).toBe('invalid_request');
    expect((await redeem(code, verifier)).status).toBe(200);
  });

  it('two concurrent redemptions: exactly one wins', async () => {
    const { code, verifier } = await getCode();
    const results = await Promise.all([redeem(code, verifier), redeem(code, verifier), redeem(code, verifier)]);
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    expect(results.filter((r) => r.body.error === 'invalid_grant')).toHaveLength(2);
  });

  it('expires after 60 s by default', async () => {
    const { code, verifier } = await getCode();
    await server.advanceClock(61);
    const r = await redeem(code, verifier);
    expect(r.body.error).toBe('invalid_grant');
  });

  it('a disabled user gets no tokens from an outstanding code', async () => {
    const { code, verifier } = await getCode({}, new Browser(server.url), BOB);
    const dis = await server.cli(['users', 'disable', 'bob']);
    expect(dis.code, dis.stderr).toBe(0);
    const r = await redeem(code, verifier);
    expect(r.body.error).toBe('invalid_grant');
    expect((await server.cli(['users', 'enable', 'bob'])).code).toBe(0);
  });
});

describe('refresh tokens', () => {
  async function tokens(over: Record<string, string | undefined> = {}) {
    const { code, verifier } = await getCode(over);
    const r = await redeem(code, verifier);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body as { access_token: string; refresh_token: string; id_token?: string; scope: string };
  }

  it('rotate on every use; presenting a spent one revokes the whole family', async () => {
    const t0 = await tokens();
    const r1 = await refresh(t0.refresh_token);
    expect(r1.status).toBe(200);
    const r2 = await refresh(r1.body.refresh_token as string);
    expect(r2.status).toBe(200);
    expect(await active(r2.body.access_token as string)).toBe(true);
    // An attacker replays the first refresh token.
    const reuse = await refresh(t0.refresh_token);
    expect(reuse.body.error).toBe('invalid_grant');
    for (const at of [t0.access_token, r1.body.access_token, r2.body.access_token])
      expect(await active(at as string)).toBe(false);
    expect((await refresh(r2.body.refresh_token as string)).body.error).toBe('invalid_grant');
    const grantId = claimsOf(t0.access_token).grant_id as string;
    const types = (await readEvents(server, 'WHERE grant_id = ?', [grantId])).map((e) => e.type);
    expect(types.filter((t) => t === 'refresh_token.rotated')).toHaveLength(2);
    expect(types).toContain('refresh_token.reused');
    expect(types).toContain('grant.revoked');
  });

  it('concurrent refreshes with one token: at most one succeeds', async () => {
    const t0 = await tokens();
    const results = await Promise.all([1, 2, 3].map(() => refresh(t0.refresh_token)));
    expect(results.filter((r) => r.status === 200).length).toBeLessThanOrEqual(1);
    for (const r of results.filter((x) => x.status !== 200)) expect(r.body.error).toBe('invalid_grant');
  });

  it('scope may only narrow', async () => {
    const t0 = await tokens();
    const narrow = await refresh(t0.refresh_token, { scope: 'openid orders:read' });
    expect(narrow.status).toBe(200);
    expect((narrow.body.scope as string).split(' ').sort()).toEqual(['openid', 'orders:read']);
    expect(claimsOf(narrow.body.access_token as string).scope).toBe('orders:read openid');
    // The refresh token keeps the grant's scopes: the next refresh may ask for all of them again.
    const back = await refresh(narrow.body.refresh_token as string);
    expect((back.body.scope as string).split(' ').sort()).toEqual(['email', 'openid', 'orders:read', 'profile']);
    const wider = await refresh(back.body.refresh_token as string, { scope: 'openid orders:write' });
    expect(wider.status).toBe(400);
    expect(wider.body.error).toBe('invalid_scope');
    // A refused request spends nothing.
    expect((await refresh(back.body.refresh_token as string)).status).toBe(200);
  });

  it('is bound to its client', async () => {
    const t0 = await tokens();
    const other = await postForm(
      server,
      '/token',
      { grant_type: 'refresh_token', refresh_token: t0.refresh_token },
      { authorization: basicAuth('conf', svcSecret) },
    );
    expect(other.body.error).toBe('invalid_grant');
    expect((await refresh(t0.refresh_token)).status).toBe(200);
  });

  it('dies when unused for the idle lifetime (24 h)', async () => {
    const t0 = await tokens();
    await server.advanceClock(24 * 3600 + 1);
    expect((await refresh(t0.refresh_token)).body.error).toBe('invalid_grant');
  });

  it('dies at the absolute lifetime (14 d) however often it is rotated', async () => {
    let rt = (await tokens()).refresh_token;
    for (let day = 0; day < 14; day++) {
      await server.advanceClock(23 * 3600);
      const r = await refresh(rt);
      if (r.status !== 200) {
        expect(day).toBeGreaterThanOrEqual(13);
        expect(r.body.error).toBe('invalid_grant');
        return;
      }
      rt = r.body.refresh_token as string;
    }
    await server.advanceClock(24 * 3600);
    expect((await refresh(rt)).body.error).toBe('invalid_grant');
  });

  it('OpenID requests get one only with offline_access, unless the client policy says otherwise', async () => {
    const without = await tokens({ scope: 'openid orders:read' });
    expect(without.refresh_token).toBeUndefined();
    expect(without.id_token).toBeTruthy();
    const plain = await tokens({ scope: 'orders:read' });
    expect(plain.refresh_token).toBeTruthy();
    expect(plain.id_token).toBeUndefined();
    // conf: refresh_token_requires_offline_access false.
    const b = new Browser(server.url);
    const { url, verifier } = authorizeUrl({
      client_id: 'conf',
      redirect_uri: 'https://conf.example.com/cb',
      scope: 'openid orders:read',
    });
    const q = await codeFlow(b, url);
    const r = await postForm(
      server,
      '/token',
      {
        grant_type: 'authorization_code',
        code: q.code!,
        code_verifier: verifier,
        redirect_uri: 'https://conf.example.com/cb',
      },
      { authorization: basicAuth('conf', svcSecret) },
    );
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.refresh_token).toBeTruthy();
  });

  it('stops working when the user is disabled', async () => {
    const { code, verifier } = await getCode({}, new Browser(server.url), BOB);
    const t = (await redeem(code, verifier)).body as { refresh_token: string; access_token: string };
    expect((await server.cli(['users', 'disable', 'bob'])).code).toBe(0);
    expect((await refresh(t.refresh_token)).body.error).toBe('invalid_grant');
    expect(await active(t.access_token)).toBe(false);
    expect((await server.cli(['users', 'enable', 'bob'])).code).toBe(0);
  });
});

describe('userinfo', () => {
  async function accessToken(scope: string): Promise<string> {
    const { code, verifier } = await getCode({ scope });
    const r = await redeem(code, verifier);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    return r.body.access_token as string;
  }
  const get = (headers: Record<string, string>) =>
    fetch(`${server.url}/userinfo`, { headers }).then(async (r) => ({
      status: r.status,
      www: r.headers.get('www-authenticate'),
      cache: r.headers.get('cache-control'),
      body: (await r.json()) as Record<string, unknown>,
    }));

  it('answers GET and POST (header or form body) with the claims of the scopes', async () => {
    const at = await accessToken('openid email');
    const g = await get({ authorization: `Bearer ${at}` });
    expect(g.status).toBe(200);
    expect(g.cache).toBe('no-store');
    expect(g.body.email).toBe('alice@example.com');
    expect(g.body.preferred_username).toBeUndefined(); // no profile scope
    const p = await postForm(server, '/userinfo', { access_token: at });
    expect(p.status).toBe(200);
    expect(p.body.sub).toBe(g.body.sub);
  });

  it('refuses a missing, malformed, foreign-audience, expired or revoked token with RFC 6750 errors', async () => {
    const none = await get({});
    expect(none.status).toBe(401);
    expect(none.www).toMatch(/^Bearer /);
    expect(none.www).not.toContain('error=');
    const bad = await get({ authorization: 'Bearer not-a-token' });
    expect(bad.status).toBe(401);
    expect(bad.www).toContain('error="invalid_token"');
    // A token without openid is for the API only: not for userinfo.
    const apiOnly = await accessToken('orders:read');
    expect((await get({ authorization: `Bearer ${apiOnly}` })).status).toBe(401);
    // A machine token (client_credentials) has no user.
    const cc = await postForm(
      server,
      '/token',
      { grant_type: 'client_credentials' },
      { authorization: basicAuth('svc', svcSecret) },
    );
    expect((await get({ authorization: `Bearer ${cc.body.access_token}` })).status).toBe(401);
    const at = await accessToken('openid profile');
    expect((await get({ authorization: `Bearer ${at}` })).status).toBe(200);
    await server.advanceClock(601);
    const expired = await get({ authorization: `Bearer ${at}` });
    expect(expired.status).toBe(401);
    expect(expired.body.error).toBe('invalid_token');
  });
});
