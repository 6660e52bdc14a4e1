/**
 * /authorize and /par, black-box: client and redirect_uri checks (error page, never a redirect), errors with iss and
 * state (RFC 9207), PKCE, response types, repeated parameters, prompt/max_age, consent memory, PAR.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields, pkce, queryOf } from './helpers/browser.ts';
import { query, readEvents } from './helpers/db.ts';
import { basicAuth } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import {
  ALICE,
  approve,
  authorizeUrl,
  BOB,
  codeFlow,
  PAR_CB,
  signInConfig,
  signInFrom,
  WEB_CB,
} from './helpers/signin.ts';

let server: RunningServer;
let parSecret: string;

beforeAll(async () => {
  const c = signInConfig();
  parSecret = c.parSecret;
  server = await startServer(c.config);
});
afterAll(async () => server?.close());

const sha256Hex = (v: string) => createHash('sha256').update(v).digest('hex');

/** A browser already signed in as alice with consent for the default scopes. */
async function signedIn(user = ALICE): Promise<Browser> {
  const b = new Browser(server.url);
  const q = await codeFlow(b, authorizeUrl().url, user);
  expect(q.code).toBeDefined();
  return b;
}

describe('client and redirect_uri are checked first: an error page, never a redirect', () => {
  const tricks: Array<[string, string]> = [
    ['trailing slash', `${WEB_CB}/`],
    ['case of the host', 'https://APP.example.com/cb'],
    ['case of the path', 'https://app.example.com/CB'],
    ['added query', `${WEB_CB}?evil=1`],
    ['changed registered query', 'https://app.example.com/cb2?x=2'],
    ['fragment', `${WEB_CB}#x`],
    ['userinfo@host', 'https://evil.example@app.example.com/cb'],
    ['host@evil', 'https://app.example.com@evil.example/cb'],
    ['other port on a non-loopback host', 'https://app.example.com:8443/cb'],
    ['path traversal', 'https://app.example.com/cb/../evil'],
    ['encoded path traversal', 'https://app.example.com/cb/%2e%2e/evil'],
    ['http instead of https', 'http://app.example.com/cb'],
    ['another host', 'https://evil.example/cb'],
    ['loopback path traversal', 'http://127.0.0.1:5000/x/../native'],
    ['localhost name is not a loopback IP literal', 'http://localhost:5000/native'],
    ['loopback over https is not registered', 'https://127.0.0.1:5000/native'],
    ['loopback userinfo', 'http://127.0.0.1@evil.example/native'],
  ];
  for (const [name, uri] of tricks) {
    it(`refuses redirect_uri: ${name}`, async () => {
      const r = await new Browser(server.url).get(authorizeUrl({ redirect_uri: uri }).url);
      expect(r.status).toBe(400);
      expect(r.location).toBeUndefined();
      expect(r.headers.get('content-type')).toMatch(/^text\/html/);
      expect(r.body).toContain('not registered');
    });
  }

  it('accepts the exact registered URIs (with their own query kept)', async () => {
    const b = await signedIn();
    for (const uri of [WEB_CB, 'https://app.example.com/cb2?x=1', 'com.example.app:/oauth']) {
      const r = await b.get(authorizeUrl({ redirect_uri: uri }).url);
      expect(r.status).toBe(303);
      expect(r.location!.startsWith(uri.includes('?') ? `${uri}&` : `${uri}?`)).toBe(true);
    }
  });

  it('a loopback redirect URI accepts any port (RFC 8252 §7.3)', async () => {
    const b = await signedIn();
    for (const port of [1, 5000, 65535]) {
      const uri = `http://127.0.0.1:${port}/native`;
      const r = await b.get(authorizeUrl({ redirect_uri: uri }).url);
      expect(r.status).toBe(303);
      expect(r.location!.startsWith(`${uri}?code=`)).toBe(true);
    }
  });

  it('unknown, missing or disabled client: error page', async () => {
    const b = new Browser(server.url);
    for (const over of [{ client_id: 'nope' }, { client_id: undefined }]) {
      const r = await b.get(authorizeUrl(over).url);
      expect(r.status).toBe(400);
      expect(r.location).toBeUndefined();
    }
  });

  it('redirect_uri omitted: allowed only when exactly one is registered', async () => {
    const r = await new Browser(server.url).get(authorizeUrl({ redirect_uri: undefined }).url);
    expect(r.status).toBe(400);
    expect(r.location).toBeUndefined();
  });

  it('a repeated client_id or redirect_uri: error page', async () => {
    const b = new Browser(server.url);
    const { url } = authorizeUrl();
    for (const extra of ['&client_id=web', `&redirect_uri=${encodeURIComponent('https://evil.example/cb')}`]) {
      const r = await b.get(url + extra);
      expect(r.status).toBe(400);
      expect(r.location).toBeUndefined();
    }
  });
});

describe('errors after the client is known go to its redirect_uri with state and iss (RFC 9207)', () => {
  const expectError = async (over: Record<string, string | undefined>, error: string, extra = '') => {
    const r = await new Browser(server.url).get(authorizeUrl(over).url + extra);
    expect(r.status).toBe(303);
    expect(r.location!.startsWith(`${WEB_CB}?`)).toBe(true);
    const q = queryOf(r.location);
    expect(q).toMatchObject({ error, iss: server.issuer });
    expect(q.code).toBeUndefined();
    return q;
  };

  it('only response_type=code: token, id_token and hybrids are unsupported_response_type', async () => {
    for (const rt of ['token', 'id_token', 'code id_token', 'code token', 'id_token token', 'none'])
      expect((await expectError({ response_type: rt }, 'unsupported_response_type')).state).toBe('st-123');
    await expectError({ response_type: undefined }, 'invalid_request');
  });

  it('PKCE is required, S256 only', async () => {
    await expectError({ code_challenge: undefined, code_challenge_method: undefined }, 'invalid_request');
    await expectError({ code_challenge_method: undefined }, 'invalid_request'); // defaults to plain
    const { verifier } = pkce();
    await expectError({ code_challenge: verifier, code_challenge_method: 'plain' }, 'invalid_request');
    await expectError({ code_challenge: 'short', code_challenge_method: 'S256' }, 'invalid_request');
  });

  it('a repeated parameter is invalid_request', async () => {
    await expectError({}, 'invalid_request', '&scope=openid');
    await expectError({}, 'invalid_request', '&code_challenge=x');
    await expectError({}, 'invalid_request', '&response_type=token');
    // A repeated state is not echoed (we would have to pick one).
    const q = await expectError({}, 'invalid_request', '&state=other');
    expect(q.state).toBeUndefined();
  });

  it('scopes the client may not have: invalid_scope; none: invalid_scope', async () => {
    await expectError({ scope: 'openid admin' }, 'invalid_scope');
    await expectError({ scope: undefined }, 'invalid_scope');
  });

  it('a resource the client may not use: invalid_target', async () => {
    await expectError({ resource: 'https://other.example.com' }, 'invalid_target');
  });

  it('request objects are not supported; unsupported prompt and response_mode are invalid_request', async () => {
    await expectError({ request: 'eyJhbGciOiJub25lIn0.e30.' }, 'request_not_supported');
    await expectError({ prompt: 'select_account' }, 'invalid_request');
    await expectError({ prompt: 'none login' }, 'invalid_request');
    await expectError({ response_mode: 'fragment' }, 'invalid_request');
    await expectError({ max_age: '-1' }, 'invalid_request');
  });

  it('a client without the authorization_code grant: unauthorized_client', async () => {
    const r = await new Browser(server.url).get(
      authorizeUrl({ client_id: 'svc', redirect_uri: 'https://svc.example.com/cb', scope: 'orders:read' }).url,
    );
    expect(r.status).toBe(303);
    expect(queryOf(r.location)).toMatchObject({ error: 'unauthorized_client', iss: server.issuer, state: 'st-123' });
  });

  it('prompt=none without a session: login_required (redirect, with iss)', async () => {
    const q = await expectError({ prompt: 'none' }, 'login_required');
    expect(q.state).toBe('st-123');
  });

  it('refusals are recorded as authorization.failed', async () => {
    const events = await readEvents(server, "WHERE type = 'authorization.failed'");
    expect(events.some((e) => e.data.error === 'unsupported_response_type')).toBe(true);
    expect(events.some((e) => e.data.error === 'invalid_request' && e.client_id === null)).toBe(true);
    // An unknown client id is data, never put in the client_id column.
    const unknown = events.find((e) => e.data.error === 'invalid_client');
    expect(unknown).toMatchObject({ client_id: null, data: { client_id_sent: 'nope' } });
  });
});

describe('the code flow with login and consent', () => {
  it('signs in (303, new session id), asks consent, issues a single-use code bound to everything', async () => {
    const b = new Browser(server.url);
    const { url } = authorizeUrl({ scope: 'openid profile orders:read', resource: 'https://api.example.com' });
    const first = await b.get(url);
    expect(first.status).toBe(303);
    expect(first.location).toMatch(/^\/login\?return_to=%2Fauthorize%3F/);
    const login = await b.follow(first);
    expect(login.body).toContain('Example &lt;Web&gt; App'); // the client's name, escaped
    const anonymous = [...b.jar.values()][0];
    const fields = formFields(login.body, '/login');

    // A wrong password: 401, the same message as an unknown user, and an event.
    const bad = await b.post('/login', { ...fields, username: 'alice', password: 'wrong password!' });
    const unknown = await b.post('/login', { ...fields, username: 'nobody', password: 'wrong password!' });
    expect(bad.status).toBe(401);
    expect(unknown.status).toBe(401);
    const msg = (h: string) => /<div class="error"[^>]*>([^<]*)</.exec(h)?.[1];
    expect(msg(bad.body)).toBe('Wrong username or password.');
    expect(msg(unknown.body)).toBe(msg(bad.body));

    const ok = await b.post('/login', { ...fields, username: ALICE.username, password: ALICE.password });
    expect(ok.status).toBe(303);
    expect(ok.location).toBe(fields.return_to);
    const fresh = [...b.jar.values()][0];
    expect(fresh).not.toBe(anonymous); // a new session id at sign-in (no fixation)

    const consent = await b.follow(ok);
    expect(consent.status).toBe(200);
    expect(consent.body).toContain('Read your orders');
    expect(consent.body).toContain('See your name');
    expect(consent.body).toContain('Orders API');
    expect(consent.body).toContain('https://api.example.com');
    const done = await approve(b, consent);
    expect(done.status).toBe(303);
    const q = queryOf(done.location);
    expect(q).toMatchObject({ state: 'st-123', iss: server.issuer });
    expect(q.code).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const [row] = await query<Record<string, unknown>>(
      server,
      'SELECT * FROM authorization_codes WHERE code_hash = $1',
      [sha256Hex(q.code!)],
    );
    expect(row).toMatchObject({
      client_id: 'web',
      redirect_uri: WEB_CB,
      code_challenge_method: 'S256',
      scope: 'openid profile orders:read',
      nonce: 'n-456',
    });
    expect(JSON.parse(String(row!.resources))).toEqual(['https://api.example.com']);
    expect(JSON.parse(String(row!.amr))).toEqual(['pwd']);
    expect(Number(row!.expires_at) - Number(row!.created_at)).toBe(60_000);
    expect(await query(server, 'SELECT * FROM authorization_codes WHERE code_hash = $1', [q.code])).toEqual([]);

    const types = (await readEvents(server)).map((e) => e.type);
    for (const t of [
      'login.failed',
      'login.succeeded',
      'session.created',
      'consent.granted',
      'grant.created',
      'authorization_code.issued',
    ])
      expect(types).toContain(t);
    const failed = await readEvents(server, "WHERE type = 'login.failed'");
    expect(failed.map((e) => e.data.reason)).toEqual(expect.arrayContaining(['bad_password', 'unknown_user']));
    expect(JSON.stringify(failed)).not.toContain('wrong password');
  });

  it('consent is remembered per user, client and scopes; a wider request asks again', async () => {
    const b = await signedIn();
    const again = await b.get(authorizeUrl().url);
    expect(again.status).toBe(303);
    expect(queryOf(again.location).code).toBeDefined();
    const wider = await b.get(authorizeUrl({ scope: 'openid orders:read orders:write' }).url);
    expect(wider.status).toBe(200);
    expect(wider.body).toContain('Place orders for you');
    // Another user has their own consent.
    const bob = new Browser(server.url);
    const r = await signInFrom(bob, await bob.get(authorizeUrl().url), BOB);
    expect(r.status).toBe(200);
    expect(r.body).toContain('action="/consent"');
  });

  it('POST /authorize works like GET', async () => {
    const b = await signedIn();
    const { url } = authorizeUrl();
    const r = await b.post('/authorize', url.slice('/authorize?'.length));
    expect(r.status).toBe(303);
    expect(queryOf(r.location)).toMatchObject({ state: 'st-123', iss: server.issuer });
  });

  it('prompt=none with a session and consent returns a code; without consent: consent_required', async () => {
    const b = await signedIn();
    const r = await b.get(authorizeUrl({ prompt: 'none' }).url);
    expect(queryOf(r.location).code).toBeDefined();
    const r2 = await b.get(authorizeUrl({ prompt: 'none', scope: 'openid email' }).url);
    expect(queryOf(r2.location)).toMatchObject({ error: 'consent_required', iss: server.issuer });
  });

  it('prompt=consent asks even when remembered; deny answers access_denied', async () => {
    const b = await signedIn();
    const page = await b.get(authorizeUrl({ prompt: 'consent' }).url);
    expect(page.status).toBe(200);
    const denied = await approve(b, page, 'deny');
    expect(denied.status).toBe(303);
    expect(queryOf(denied.location)).toMatchObject({ error: 'access_denied', state: 'st-123', iss: server.issuer });
    expect((await readEvents(server, "WHERE type = 'consent.denied'")).length).toBeGreaterThan(0);
  });

  it('prompt=login and max_age=0 make the user sign in again, then continue', async () => {
    const b = await signedIn();
    for (const over of [{ prompt: 'login' }, { max_age: '0' }]) {
      const r = await b.get(authorizeUrl(over).url);
      expect(r.status).toBe(303);
      expect(r.location).toMatch(/^\/login\?/);
      const back = await signInFrom(b, r);
      expect(back.status).toBe(303);
      expect(queryOf(back.location).code).toBeDefined();
    }
    // A generous max_age with a recent sign-in needs no new login.
    const ok = await b.get(authorizeUrl({ max_age: '3600' }).url);
    expect(queryOf(ok.location).code).toBeDefined();
  });

  it('login_hint fills the username', async () => {
    const b = new Browser(server.url);
    const page = await b.follow(await b.get(authorizeUrl({ login_hint: 'alice@example' }).url));
    expect(formFields(page.body, '/login').username).toBe('alice@example');
  });

  it('a stored request cannot be replayed: the consent form works once', async () => {
    const b = await signedIn();
    const page = await b.get(authorizeUrl({ scope: 'openid email' }).url);
    const fields = formFields(page.body, '/consent');
    expect((await b.post('/consent', { ...fields, decision: 'approve' })).status).toBe(303);
    const again = await b.post('/consent', { ...fields, decision: 'approve' });
    expect(again.status).toBe(400);
    expect(again.location).toBeUndefined();
  });

  it('a client cannot pre-satisfy prompt=login with internal parameters', async () => {
    const b = await signedIn();
    const r = await b.get(authorizeUrl({ prompt: 'login', _login_after: '0' }).url);
    expect(r.location).toMatch(/^\/login\?/);
  });
});

describe('pushed authorization requests (RFC 9126)', () => {
  const push = async (body: Record<string, string>, auth = basicAuth('par-only', parSecret)) => {
    const r = await fetch(`${server.url}/par`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth },
      body: new URLSearchParams(body),
    });
    return { status: r.status, json: (await r.json()) as Record<string, unknown> };
  };
  const parParams = () => {
    const { challenge } = pkce();
    return {
      response_type: 'code',
      redirect_uri: PAR_CB,
      scope: 'openid orders:read',
      state: 'par-state',
      code_challenge: challenge,
      code_challenge_method: 'S256',
    };
  };

  it('a client that requires PAR cannot send the request directly', async () => {
    const r = await new Browser(server.url).get(
      authorizeUrl({ client_id: 'par-only', redirect_uri: PAR_CB, scope: 'openid orders:read' }).url,
    );
    expect(r.status).toBe(303);
    expect(queryOf(r.location)).toMatchObject({ error: 'invalid_request', iss: server.issuer });
  });

  it('pushes, then the request_uri works once, only for its client', async () => {
    const p = await push(parParams());
    expect(p.status).toBe(201);
    expect(p.json.request_uri).toMatch(/^urn:ietf:params:oauth:request_uri:/);
    expect(p.json.expires_in).toBe(60);
    const requestUri = String(p.json.request_uri);

    // Another client presenting it: refused (error page, the request_uri stays unusable to it).
    const b = new Browser(server.url);
    const stolen = await b.get(`/authorize?client_id=web&request_uri=${encodeURIComponent(requestUri)}`);
    expect(stolen.status).toBe(400);
    expect(stolen.location).toBeUndefined();

    const first = await b.get(`/authorize?client_id=par-only&request_uri=${encodeURIComponent(requestUri)}`);
    expect(first.status).toBe(303);
    expect(first.location).toMatch(/^\/login\?/);
    const consent = await signInFrom(b, first);
    const done = await approve(b, consent);
    expect(queryOf(done.location)).toMatchObject({ state: 'par-state', iss: server.issuer });
    expect(done.location!.startsWith(`${PAR_CB}?code=`)).toBe(true);

    const second = await b.get(`/authorize?client_id=par-only&request_uri=${encodeURIComponent(requestUri)}`);
    expect(second.status).toBe(400);
    expect(second.location).toBeUndefined();
    expect(second.body).toContain('already used');
  });

  it('query parameters beside request_uri are ignored (only pushed ones count)', async () => {
    const b = await signedIn();
    const p = await push(parParams());
    const r = await b.follow(
      await b.get(
        `/authorize?client_id=par-only&request_uri=${encodeURIComponent(String(p.json.request_uri))}&redirect_uri=${encodeURIComponent('https://evil.example/cb')}&state=evil`,
      ),
    );
    // Consent page for par-only (alice has not approved it) carrying the pushed request.
    const done = r.body.includes('action="/consent"') ? await approve(b, r) : r;
    expect(done.location!.startsWith(`${PAR_CB}?`)).toBe(true);
    expect(queryOf(done.location).state).toBe('par-state');
  });

  it('/par validates like /authorize and authenticates the client', async () => {
    expect((await push({ ...parParams(), redirect_uri: 'https://evil.example/cb' })).json.error).toBe(
      'invalid_request',
    );
    expect((await push({ ...parParams(), code_challenge_method: 'plain' })).json.error).toBe('invalid_request');
    expect((await push({ ...parParams(), response_type: 'token' })).json.error).toBe('unsupported_response_type');
    expect((await push({ ...parParams(), request_uri: 'urn:x' })).json.error).toBe('invalid_request');
    const bad = await push(parParams(), basicAuth('par-only', 'wrong-secret-wrong-secret'));
    expect(bad.status).toBe(401);
    expect(bad.json.error).toBe('invalid_client');
  });

  it('a pushed request expires', async () => {
    const p = await push(parParams());
    await server.advanceClock(61);
    const r = await new Browser(server.url).get(
      `/authorize?client_id=par-only&request_uri=${encodeURIComponent(String(p.json.request_uri))}`,
    );
    expect(r.status).toBe(400);
    expect(r.body).toContain('expired');
    expect((await readEvents(server, "WHERE type = 'par.created'")).length).toBeGreaterThan(0);
  });
});

describe('discovery', () => {
  it('advertises the end-session endpoint, and the authorization endpoint once /token redeems codes', async () => {
    const d = (await (await fetch(`${server.url}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(d.end_session_endpoint).toBe(`${server.issuer}/logout`);
    if (!(d.grant_types_supported as string[]).includes('authorization_code')) {
      // Until the authorization_code grant exists at /token, advertising the endpoint would be untrue.
      expect(d.authorization_endpoint).toBeUndefined();
      expect(d.response_types_supported).toEqual([]);
      return;
    }
    expect(d).toMatchObject({
      authorization_endpoint: `${server.issuer}/authorize`,
      pushed_authorization_request_endpoint: `${server.issuer}/par`,
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true,
    });
  });
});
