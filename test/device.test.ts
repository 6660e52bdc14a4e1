/**
 * Device authorization grant (RFC 8628), black-box: openid-client is the device (a CLI or TV), a scripted Browser is
 * the person at the verification page. Covers the endpoint, the page (sign-in, prefill without approval, code
 * normalisation, session-bound confirmation, CSRF, wrong-code throttling per session and per IP), and the polling
 * answers (authorization_pending, slow_down with a growing interval, expired_token, access_denied), single
 * redemption and client binding. Tests that move the fake clock come last in their describe blocks and create their
 * own codes and sessions afterwards.
 */
import * as client from 'openid-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields, type Res } from './helpers/browser.ts';
import { query, readEvents } from './helpers/db.ts';
import { claimsOf, type HttpResult, postForm, secret } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, API, BOB, signInConfig, signInFrom } from './helpers/signin.ts';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const CAROL = { username: 'carol', password: 'carol has a long passphrase' };
const USER_CODE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/;

let server: RunningServer;
let cliSecret: string;

beforeAll(async () => {
  const c = signInConfig();
  cliSecret = secret();
  const clients = c.config.clients as Array<Record<string, unknown>>;
  clients.push(
    {
      client_id: 'tv',
      client_name: 'Living Room <TV>',
      token_endpoint_auth_method: 'none',
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      scope: 'openid profile offline_access orders:read',
    },
    {
      client_id: 'cli',
      client_name: 'Orders CLI',
      client_secret: cliSecret,
      grant_types: [DEVICE_GRANT],
      scope: 'orders:read orders:write',
    },
  );
  (c.config.users as Array<Record<string, unknown>>).push(CAROL);
  // A short interval keeps openid-client's real waits short; the per-IP limit is low so it can be reached quickly.
  c.config.device = { interval: '1s', max_failures_per_session: 5, max_failures_per_ip: 8 };
  server = await startServer(c.config);
});
afterAll(async () => server?.close());

interface DeviceAuth {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

async function authorizeDevice(form: Record<string, string> = {}, basic?: [string, string]): Promise<HttpResult> {
  const body = basic ? form : { client_id: 'tv', ...form };
  return postForm(`${server.url}/device_authorization`, body, basic ? { basic } : {});
}

async function newDevice(scope = 'openid profile offline_access orders:read'): Promise<DeviceAuth> {
  const r = await authorizeDevice({ scope });
  expect(r.status, r.text).toBe(200);
  return r.json as unknown as DeviceAuth;
}

function poll(deviceCode: string, clientId = 'tv', extra: Record<string, string> = {}): Promise<HttpResult> {
  const form = { grant_type: DEVICE_GRANT, device_code: deviceCode, ...extra };
  return clientId === 'cli'
    ? postForm(`${server.url}/token`, form, { basic: ['cli', cliSecret] })
    : postForm(`${server.url}/token`, { ...form, client_id: clientId });
}

/** A browser signed in (through the device page's own redirect to /login), showing the code entry page. */
async function signedInAtDevice(user = ALICE, opts: { localAddress?: string } = {}, path = '/device'): Promise<Res> {
  const b = new Browser(server.url, opts);
  const first = await b.get(path);
  expect(first.status).toBe(303);
  expect(first.location).toMatch(/^\/login\?return_to=%2Fdevice/);
  const page = await signInFrom(b, first, user);
  expect(page.status, page.body.slice(0, 500)).toBe(200);
  expect(page.body).toContain('action="/device"');
  return Object.assign(page, { browser: b });
}

type PageRes = Res & { browser: Browser };

/** Types a code on the entry page; returns the response (303 to the confirmation page when the code is good). */
async function enterCode(b: Browser, page: Res, userCode: string): Promise<Res> {
  const fields = formFields(page.body, '/device');
  return b.post('/device', { ...fields, user_code: userCode });
}

/** Enters the code, follows to the confirmation page, answers it. Returns the final 303. */
async function decide(b: Browser, page: Res, userCode: string, decision: 'approve' | 'deny'): Promise<Res> {
  const entered = await enterCode(b, page, userCode);
  expect(entered.status, entered.body.slice(0, 500)).toBe(303);
  const confirm = await b.follow(entered);
  expect(confirm.status, confirm.body.slice(0, 500)).toBe(200);
  const done = await b.post('/device/confirm', { ...formFields(confirm.body, '/device/confirm'), decision });
  expect(done.status, done.body.slice(0, 500)).toBe(303);
  return done;
}

async function deviceEvents(type: string): Promise<Array<Record<string, unknown>>> {
  return (await readEvents(server, 'WHERE type = ?', [type])).map((e) => ({ ...e.data, client_id: e.client_id }));
}

describe('device flow with openid-client as the device', () => {
  let config: client.Configuration;
  beforeAll(async () => {
    config = await client.discovery(new URL(server.issuer), 'tv', undefined, client.None(), {
      execute: [client.allowInsecureRequests],
    });
  });

  it('discovery advertises the device authorization endpoint and grant', () => {
    const m = config.serverMetadata();
    expect(m.device_authorization_endpoint).toBe(`${server.issuer}/device_authorization`);
    expect(m.grant_types_supported).toContain(DEVICE_GRANT);
  });

  it('a person approves at the verification page while the device polls; tokens are code-flow tokens', async () => {
    const auth = await client.initiateDeviceAuthorization(config, {
      scope: 'openid profile offline_access orders:read',
    });
    expect(auth.user_code).toMatch(USER_CODE);
    expect(auth.verification_uri).toBe(`${server.issuer}/device`);
    expect(auth.verification_uri_complete).toBe(`${server.issuer}/device?user_code=${auth.user_code}`);
    expect(auth.expires_in).toBe(600);
    expect(auth.interval).toBe(1);
    expect(auth.device_code.length).toBeGreaterThanOrEqual(43); // 256 bits, base64url

    const polling = client.pollDeviceAuthorizationGrant(config, auth);
    // The person types the code (lower case, without the dash) on another device.
    const page = (await signedInAtDevice()) as PageRes;
    const b = page.browser;
    const entered = await enterCode(b, page, auth.user_code.toLowerCase().replace('-', ''));
    expect(entered.status).toBe(303);
    expect(entered.location).toMatch(/^\/device\/confirm\?request_uri=/);
    const confirm = await b.follow(entered);
    expect(confirm.status).toBe(200);
    expect(confirm.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect(confirm.headers.get('content-security-policy')).toContain("form-action 'self'");
    expect(confirm.headers.get('x-frame-options')).toBe('DENY');
    expect(confirm.headers.get('cache-control')).toBe('no-store');
    expect(confirm.body).not.toMatch(/<script/i);
    // Who asks, for what, on which API, and the code to compare with the device's screen; the name is escaped.
    expect(confirm.body).toContain('Living Room &lt;TV&gt;');
    expect(confirm.body).toContain(auth.user_code);
    expect(confirm.body).toContain('Read your orders');
    expect(confirm.body).toContain('See your name');
    expect(confirm.body).toContain('Orders API');
    expect(confirm.body).toContain(API);
    const done = await b.post('/device/confirm', {
      ...formFields(confirm.body, '/device/confirm'),
      decision: 'approve',
    });
    expect(done.status).toBe(303);
    expect(done.location).toBe('/device?result=approved');
    expect((await b.follow(done)).body).toContain('Device connected');

    const tokens = await polling;
    expect(tokens.token_type.toLowerCase()).toBe('bearer');
    expect(tokens.refresh_token).toBeTruthy();
    // offline_access is about the refresh token, not the access token (as in the code flow).
    expect(tokens.scope?.split(' ').sort()).toEqual(['openid', 'orders:read', 'profile']);
    const id = tokens.claims()!;
    expect(id.iss).toBe(server.issuer);
    expect(id.aud).toBe('tv');
    expect(id.amr).toEqual(['pwd']);
    expect(typeof id.auth_time).toBe('number');
    expect(typeof id.sid).toBe('string');
    const at = claimsOf(tokens.access_token);
    expect(at.aud).toEqual([API, `${server.issuer}/userinfo`]);
    expect(at.client_id).toBe('tv');
    expect(at.sub).toBe(id.sub);
    expect(typeof at.grant_id).toBe('string');
    const info = await client.fetchUserInfo(config, tokens.access_token, id.sub);
    expect(info.preferred_username).toBe('alice');
    const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token!);
    expect(refreshed.refresh_token).not.toBe(tokens.refresh_token);

    // The whole story is in the event log, correlated by the device reference and the grant.
    const events = await readEvents(server, 'WHERE grant_id = ? OR type LIKE ?', [at.grant_id, 'device_code.%']);
    const ref = events.find((e) => e.type === 'device_code.redeemed' && e.subject === id.sub)?.data.device;
    expect(ref).toMatch(/^[0-9a-f]{16}$/);
    const mine = events.filter((e) => e.data.device === ref || e.type === 'grant.created' || e.type === 'token.issued');
    expect(mine.map((e) => e.type)).toEqual(
      expect.arrayContaining([
        'device_code.issued',
        'device_code.approved',
        'device_code.redeemed',
        'grant.created',
        'token.issued',
      ]),
    );
    expect(events.find((e) => e.type === 'grant.created')?.data.via).toBe('device_code');
    // No code appears in any event.
    const all = JSON.stringify(await readEvents(server));
    expect(all).not.toContain(auth.device_code);
    expect(all).not.toContain(auth.user_code.replace('-', ''));

    // A device_code yields tokens once.
    const again = await poll(auth.device_code);
    expect(again.status).toBe(400);
    expect(again.json?.error).toBe('invalid_grant');
  });

  it('deny: the device gets access_denied', async () => {
    const auth = await client.initiateDeviceAuthorization(config, { scope: 'orders:read' });
    const polling = client.pollDeviceAuthorizationGrant(config, auth);
    polling.catch(() => {});
    const page = (await signedInAtDevice()) as PageRes;
    const done = await decide(page.browser, page, auth.user_code, 'deny');
    expect(done.location).toBe('/device?result=denied');
    await expect(polling).rejects.toMatchObject({ error: 'access_denied' });
    const r = await poll(auth.device_code);
    expect(r.status).toBe(400);
    expect(r.json?.error).toBe('access_denied');
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect((await deviceEvents('device_code.denied')).length).toBeGreaterThanOrEqual(1);
  });
});

describe('/device_authorization', () => {
  it('answers with fresh codes, never cached; the code is stored hashed', async () => {
    const r = await authorizeDevice({ scope: 'orders:read' });
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const a = r.json as unknown as DeviceAuth;
    const b = await newDevice('orders:read');
    expect(a.device_code).not.toBe(b.device_code);
    expect(a.user_code).not.toBe(b.user_code);
    expect(a.user_code).toMatch(USER_CODE);
    const rows = await query<{ device_code_hash: string }>(server, 'SELECT device_code_hash FROM device_codes');
    expect(rows.map((x) => x.device_code_hash).join()).not.toContain(a.device_code);
  });

  it('authenticates confidential clients as /token does; public clients need no secret', async () => {
    const ok = await authorizeDevice({ scope: 'orders:write' }, ['cli', cliSecret]);
    expect(ok.status, ok.text).toBe(200);
    const wrong = await authorizeDevice({ scope: 'orders:write' }, ['cli', 'not-the-secret-at-all']);
    expect(wrong.status).toBe(401);
    expect(wrong.json?.error).toBe('invalid_client');
    const noSecret = await postForm(`${server.url}/device_authorization`, { client_id: 'cli', scope: 'orders:read' });
    expect(noSecret.status).toBe(401);
  });

  it('refuses clients without the grant, scopes beyond the client, unknown resources', async () => {
    const web = await authorizeDevice({ client_id: 'web', scope: 'orders:read' });
    expect(web.status).toBe(400);
    expect(web.json?.error).toBe('unauthorized_client');
    const wide = await authorizeDevice({ scope: 'orders:write' });
    expect(wide.json?.error).toBe('invalid_scope');
    const none = await authorizeDevice({});
    expect(none.json?.error).toBe('invalid_scope');
    const target = await authorizeDevice({ scope: 'orders:read', resource: 'https://elsewhere.example.com' });
    expect(target.json?.error).toBe('invalid_target');
    const named = await authorizeDevice({ scope: 'orders:read', resource: API });
    expect(named.status).toBe(200);
  });
});

describe('polling at /token', () => {
  it('authorization_pending until the person decides; not logged as a failure', async () => {
    const d = await newDevice('orders:read');
    const r = await poll(d.device_code);
    expect(r.status).toBe(400);
    expect(r.json?.error).toBe('authorization_pending');
    expect(r.headers.get('cache-control')).toBe('no-store');
    const failed = await readEvents(server, 'WHERE type = ?', ['token.failed']);
    expect(failed.some((e) => e.data.error === 'authorization_pending')).toBe(false);
  });

  it('unknown device codes and missing parameters', async () => {
    expect((await poll('not-a-device-code')).json?.error).toBe('invalid_grant');
    const missing = await postForm(`${server.url}/token`, { grant_type: DEVICE_GRANT, client_id: 'tv' });
    expect(missing.json?.error).toBe('invalid_request');
    // A client not registered for the grant cannot poll at all.
    const web = await postForm(`${server.url}/token`, { grant_type: DEVICE_GRANT, client_id: 'web', device_code: 'x' });
    expect(web.json?.error).toBe('unauthorized_client');
  });

  it("another client cannot redeem a device_code, nor disturb its owner's polling", async () => {
    const d = await newDevice('orders:read');
    const page = (await signedInAtDevice()) as PageRes;
    await decide(page.browser, page, d.user_code, 'approve');
    const stolen = await poll(d.device_code, 'cli');
    expect(stolen.status).toBe(400);
    expect(stolen.json?.error).toBe('invalid_grant');
    // The owner polls right after the thief: no slow_down, tokens.
    const mine = await poll(d.device_code);
    expect(mine.status, mine.text).toBe(200);
    expect(claimsOf(mine.json?.access_token as string).client_id).toBe('tv');
  });

  it('an approved device is listed among connected apps; withdrawing it revokes its grant', async () => {
    const d = await newDevice('openid offline_access orders:read');
    const page = (await signedInAtDevice(BOB)) as PageRes;
    await decide(page.browser, page, d.user_code, 'approve');
    const tokens = await poll(d.device_code);
    expect(tokens.status, tokens.text).toBe(200);
    const refresh = tokens.json?.refresh_token as string;
    expect(refresh).toBeTruthy();
    const apps = await page.browser.get('/account/consents');
    expect(apps.body).toContain('Living Room &lt;TV&gt;');
    const withdrawn = await page.browser.post('/account/consents/withdraw', {
      ...formFields(apps.body, '/account/consents/withdraw'),
      client_id: 'tv',
    });
    expect(withdrawn.status).toBe(303);
    const r = await postForm(`${server.url}/token`, {
      grant_type: 'refresh_token',
      client_id: 'tv',
      refresh_token: refresh,
    });
    expect(r.json?.error).toBe('invalid_grant');
  });

  it('a user disabled between approval and redemption: the device gets nothing', async () => {
    const d = await newDevice('orders:read');
    const page = (await signedInAtDevice(CAROL)) as PageRes;
    await decide(page.browser, page, d.user_code, 'approve');
    const dis = await server.cli(['users', 'disable', 'carol']);
    expect(dis.code, dis.stderr).toBe(0);
    const r = await poll(d.device_code);
    expect(r.status).toBe(400);
    expect(r.json?.error).toBe('invalid_grant');
    const grants = await query(
      server,
      'SELECT id FROM grants WHERE user_id = (SELECT id FROM users WHERE username = $1)',
      ['carol'],
    );
    expect(grants).toHaveLength(0);
  });

  it('concurrent polls after approval: exactly one gets tokens', async () => {
    const d = await newDevice('orders:read');
    const page = (await signedInAtDevice()) as PageRes;
    await decide(page.browser, page, d.user_code, 'approve');
    const results = await Promise.all(Array.from({ length: 8 }, () => poll(d.device_code)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(1);
    for (const r of results.filter((x) => x.status !== 200)) expect(r.json?.error).toBe('invalid_grant');
    const redeemed = await readEvents(server, 'WHERE type = ?', ['device_code.redeemed']);
    const refs = new Set(redeemed.map((e) => e.data.device));
    expect(refs.size).toBe(redeemed.length); // never two redemptions of one device code
  });

  it('slow_down when polling faster than the interval, which grows by 5 seconds each time', async () => {
    const d = await newDevice('orders:read');
    expect((await poll(d.device_code)).json?.error).toBe('authorization_pending');
    const fast = await poll(d.device_code); // well within 1 s
    expect(fast.status).toBe(400);
    expect(fast.json?.error).toBe('slow_down');
    // The interval is now 6 s: 3 s later is still too fast (it would have been fine before), and grows it to 11 s.
    await server.advanceClock(3);
    expect((await poll(d.device_code)).json?.error).toBe('slow_down');
    await server.advanceClock(7);
    expect((await poll(d.device_code)).json?.error).toBe('slow_down');
    // Waiting the full interval is fine again.
    await server.advanceClock(17);
    expect((await poll(d.device_code)).json?.error).toBe('authorization_pending');
    const failed = await readEvents(server, 'WHERE type = ?', ['token.failed']);
    expect(failed.filter((e) => e.data.error === 'slow_down').length).toBeGreaterThanOrEqual(3);
  });

  it('expired_token once the code has expired, approved or not; the page refuses the code', async () => {
    const pending = await newDevice('orders:read');
    const approved = await newDevice('orders:read');
    const page = (await signedInAtDevice()) as PageRes;
    await decide(page.browser, page, approved.user_code, 'approve');
    await server.advanceClock(601);
    for (const d of [pending, approved]) {
      const r = await poll(d.device_code);
      expect(r.status).toBe(400);
      expect(r.json?.error).toBe('expired_token');
    }
    const fresh = (await signedInAtDevice()) as PageRes;
    const entered = await enterCode(fresh.browser, fresh, pending.user_code);
    expect(entered.status).toBe(400);
    expect(entered.body).toContain('not valid or has expired');
    expect((await deviceEvents('device_code.verification_failed')).some((e) => e.reason === 'expired')).toBe(true);
  });
});

describe('the verification page', () => {
  it('requires sign-in and comes back with the code after it', async () => {
    const d = await newDevice('orders:read');
    const b = new Browser(server.url);
    const first = await b.get(
      new URL(d.verification_uri_complete).pathname + new URL(d.verification_uri_complete).search,
    );
    expect(first.status).toBe(303);
    expect(first.location).toBe(`/login?return_to=${encodeURIComponent(`/device?user_code=${d.user_code}`)}`);
    const back = await signInFrom(b, first);
    expect(back.status).toBe(200);
    expect(formFields(back.body, '/device').user_code).toBe(d.user_code);
  });

  it('verification_uri_complete fills the code in but never approves by itself', async () => {
    const d = await newDevice('orders:read');
    const page = (await signedInAtDevice(ALICE, {}, `/device?user_code=${d.user_code.toLowerCase()}`)) as PageRes;
    const csp = page.headers.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(page.headers.get('cache-control')).toBe('no-store');
    expect(page.body).not.toMatch(/<script|\sstyle=|\son[a-z]+=/i);
    expect(page.body).toContain('<label for="user_code">');
    // The code is prefilled (normalised), and the page is the code form, not the decision.
    expect(formFields(page.body, '/device').user_code).toBe(d.user_code);
    expect(page.body).not.toContain('action="/device/confirm"');
    // Opening it again, signed in, still decides nothing.
    const again = await page.browser.get(`/device?user_code=${d.user_code}`);
    expect(again.status).toBe(200);
    expect(again.body).not.toContain('action="/device/confirm"');
    expect((await poll(d.device_code)).json?.error).toBe('authorization_pending');
    // A junk user_code is not reflected.
    const junk = await page.browser.get('/device?user_code=%3Cb%3Ehi');
    expect(formFields(junk.body, '/device').user_code).toBe('');
  });

  it('accepts the code in any case, with or without dashes and spaces', async () => {
    for (const shape of [
      (c: string) => c.toLowerCase(),
      (c: string) => c.replace('-', ''),
      (c: string) => ` ${c.replace('-', ' ').toLowerCase()} `,
      (c: string) => c.split('').join('-').replace(/--+/g, '-'),
    ]) {
      const d = await newDevice('orders:read');
      const page = (await signedInAtDevice()) as PageRes;
      const r = await enterCode(page.browser, page, shape(d.user_code));
      expect(r.status, `${shape(d.user_code)}: ${r.body.slice(0, 300)}`).toBe(303);
      expect(r.location).toMatch(/^\/device\/confirm\?request_uri=/);
    }
  });

  it("the confirmation is bound to the session that typed the code: another person's session sees nothing", async () => {
    const d = await newDevice('orders:read');
    const alice = (await signedInAtDevice()) as PageRes;
    const entered = await enterCode(alice.browser, alice, d.user_code);
    expect(entered.status).toBe(303);
    const confirmUrl = entered.location!;
    const requestUri = new URL(confirmUrl, server.url).searchParams.get('request_uri')!;
    const bob = (await signedInAtDevice(BOB)) as PageRes;
    const seen = await bob.browser.get(confirmUrl);
    expect(seen.status).toBe(400);
    expect(seen.body).not.toContain('action="/device/confirm"');
    const posted = await bob.browser.post('/device/confirm', {
      csrf_token: formFields(bob.body, '/device').csrf_token!,
      request_uri: requestUri,
      decision: 'approve',
    });
    expect(posted.status).toBe(400);
    expect((await poll(d.device_code)).json?.error).toBe('authorization_pending');
    // Alice can still answer; the ticket is single use.
    const confirm = await alice.browser.get(confirmUrl);
    const fields = formFields(confirm.body, '/device/confirm');
    expect((await alice.browser.post('/device/confirm', { ...fields, decision: 'approve' })).status).toBe(303);
    expect((await alice.browser.post('/device/confirm', { ...fields, decision: 'deny' })).status).toBe(400);
    await server.advanceClock(2); // the interval (the poll above started it)
    expect((await poll(d.device_code)).status).toBe(200);
  });

  it('refuses POSTs without the CSRF token of the session', async () => {
    const d = await newDevice('orders:read');
    const alice = (await signedInAtDevice()) as PageRes;
    const bob = (await signedInAtDevice(BOB)) as PageRes;
    const aliceToken = formFields(alice.body, '/device').csrf_token!;
    // No token, another session's token, no session at all.
    for (const [b, form] of [
      [alice.browser, { user_code: d.user_code }],
      [bob.browser, { user_code: d.user_code, csrf_token: aliceToken }],
      [new Browser(server.url), { user_code: d.user_code, csrf_token: aliceToken }],
    ] as const) {
      const r = await b.post('/device', form);
      expect(r.status).toBe(403);
      expect(r.body).toContain('invalid_csrf_token');
    }
    const entered = await enterCode(alice.browser, alice, d.user_code);
    const confirm = await alice.browser.follow(entered);
    const fields = formFields(confirm.body, '/device/confirm');
    for (const [b, token] of [
      [alice.browser, undefined],
      [bob.browser, aliceToken],
      [alice.browser, formFields(bob.body, '/device').csrf_token],
      [new Browser(server.url), aliceToken],
    ] as const) {
      const form: Record<string, string> = { request_uri: fields.request_uri!, decision: 'approve' };
      if (token) form.csrf_token = token;
      const r = await b.post('/device/confirm', form);
      expect(r.status).toBe(403);
    }
    expect((await poll(d.device_code)).json?.error).toBe('authorization_pending');
    expect((await alice.browser.post('/device/confirm', { ...fields, decision: 'approve' })).status).toBe(303);
  });

  it('a wrong code shows an error and writes device_code.verification_failed', async () => {
    const page = (await signedInAtDevice(ALICE, { localAddress: '127.0.0.4' })) as PageRes;
    const r = await enterCode(page.browser, page, 'BCDF-GHJK');
    expect(r.status).toBe(400);
    expect(r.body).toContain('role="alert"');
    expect(r.body).toContain('not valid or has expired');
    const malformed = await enterCode(page.browser, page, 'hello');
    expect(malformed.status).toBe(400);
    const events = await readEvents(server, 'WHERE type = ?', ['device_code.verification_failed']);
    const mine = events.filter((e) => e.data.ip === '127.0.0.4');
    expect(mine.map((e) => e.data.reason)).toEqual(['unknown', 'malformed']);
    expect(mine[0]!.subject).toBeTruthy();
  });

  it('throttles wrong codes per session: over the limit even the right code is refused', async () => {
    const d = await newDevice('orders:read');
    const from = { localAddress: '127.0.0.3' };
    const page = (await signedInAtDevice(ALICE, from)) as PageRes;
    for (let i = 0; i < 5; i++) expect((await enterCode(page.browser, page, 'BCDF-GHJK')).status).toBe(400);
    const refused = await enterCode(page.browser, page, d.user_code);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(refused.body).toContain('Too many wrong codes');
    // Another session from the same address is under both limits (5 < 8) and may go on.
    const other = (await signedInAtDevice(BOB, from)) as PageRes;
    expect((await enterCode(other.browser, other, d.user_code)).status).toBe(303);
    const events = await readEvents(server, 'WHERE type = ?', ['device_code.verification_failed']);
    expect(events.some((e) => e.data.reason === 'throttled' && e.data.ip === '127.0.0.3')).toBe(true);
  });

  it('throttles wrong codes per IP address across sessions; other addresses are unaffected', async () => {
    const d = await newDevice('orders:read');
    const from = { localAddress: '127.0.0.2' };
    const s1 = (await signedInAtDevice(ALICE, from)) as PageRes;
    for (let i = 0; i < 5; i++) expect((await enterCode(s1.browser, s1, 'BCDF-GHJK')).status).toBe(400);
    const s2 = (await signedInAtDevice(BOB, from)) as PageRes;
    for (let i = 0; i < 3; i++) expect((await enterCode(s2.browser, s2, 'BCDF-GHJK')).status).toBe(400);
    // 8 failures from this address: a fresh session from it is refused, even with the right code.
    const s3 = (await signedInAtDevice(ALICE, from)) as PageRes;
    const refused = await enterCode(s3.browser, s3, d.user_code);
    expect(refused.status).toBe(429);
    const elsewhere = (await signedInAtDevice(ALICE, { localAddress: '127.0.0.5' })) as PageRes;
    expect((await enterCode(elsewhere.browser, elsewhere, d.user_code)).status).toBe(303);
  });

  it('the throttle window slides with the clock', async () => {
    // After the window (15 minutes) the address and its sessions may try again.
    await server.advanceClock(15 * 60 + 1);
    const d = await newDevice('orders:read');
    const s = (await signedInAtDevice(ALICE, { localAddress: '127.0.0.2' })) as PageRes;
    expect((await enterCode(s.browser, s, d.user_code)).status).toBe(303);
  });
});
