/**
 * MFA, black-box over HTTP: TOTP (seeded and enrolled on the account page), replay, brute force locking across
 * sessions, recovery codes (single use), policy (mfa.required, per client, acr_values step-up, phishing-resistant
 * scopes), every path to a token (authorize, consent, device), acr/amr/auth_time in the tokens, reset-mfa, and the
 * mfa.* events. The real-browser passkey test is in browser-passkey.test.ts.
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { Browser, formFields, queryOf, type Res, unescapeHtml } from './helpers/browser.ts';
import { query, readEvents } from './helpers/db.ts';
import { claimsOf, postForm } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, approve, authorizeUrl, BOB, signInConfig, WEB_CB } from './helpers/signin.ts';
import { serverNow, totpCode, wrongCode } from './helpers/totp.ts';

const ALICE_SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const CAROL = { username: 'carol', password: 'carol has a long passphrase' };
const CAROL_SECRET = 'KRUGKIDROVUWG2ZAMJZG653OEBTG66BA';
const DAVE = { username: 'dave', password: 'dave has a long passphrase too' };
const DAVE_SECRET = 'MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U';

function baseConfig(mfa: Record<string, unknown>) {
  const c = signInConfig();
  const users = c.config.users as Array<Record<string, unknown>>;
  users[0]!.totp_secret = ALICE_SECRET;
  users.push({ ...CAROL, totp_secret: CAROL_SECRET }, { ...DAVE, totp_secret: DAVE_SECRET });
  const clients = c.config.clients as Array<Record<string, unknown>>;
  clients.push(
    {
      client_id: 'secure',
      client_name: 'Secure App',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      redirect_uris: ['https://secure.example.com/cb'],
      scope: 'openid orders:read',
      require_mfa: true,
    },
    {
      client_id: 'tv',
      client_name: 'TV',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
      scope: 'openid orders:read',
    },
  );
  c.config.mfa = { max_failures: 3, lock_period: '10m', phishing_resistant_scopes: ['orders:write'], ...mfa };
  return c.config;
}

async function token(server: RunningServer, code: string, verifier: string, redirectUri = WEB_CB, clientId = 'web') {
  const r = await postForm(`${server.url}/token`, {
    grant_type: 'authorization_code',
    client_id: clientId,
    code,
    code_verifier: verifier,
    redirect_uri: redirectUri,
  });
  expect(r.status, r.text).toBe(200);
  return r.json as { access_token: string; id_token: string };
}

/** Password step only: returns the response after the login form (not followed). */
async function password(b: Browser, start: Res, user: { username: string; password: string }): Promise<Res> {
  const login = await b.follow(start);
  expect(login.status, login.body.slice(0, 300)).toBe(200);
  const fields = formFields(login.body, '/login');
  const r = await b.post('/login', { ...fields, username: user.username, password: user.password });
  expect(r.status, r.body.slice(0, 300)).toBe(303);
  return r;
}

async function postTotp(b: Browser, mfaPage: Res, code: string): Promise<Res> {
  expect(mfaPage.status, mfaPage.body.slice(0, 500)).toBe(200);
  const fields = formFields(mfaPage.body, '/mfa/totp');
  return b.post('/mfa/totp', { ...fields, code });
}

describe('MFA with the default policy (enrolled users use their factor)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(baseConfig({}));
  });
  afterAll(async () => server?.close());

  it('a seeded TOTP user is sent to the factor step; the password-only session reaches neither consent nor a code', async () => {
    const b = new Browser(server.url);
    const { url } = authorizeUrl();
    const afterPassword = await password(b, await b.get(url), ALICE);
    expect(afterPassword.location).toMatch(/^\/mfa\?/);
    // Trying the authorization request again with this session lands on the factor step, not consent.
    const again = await b.get(url);
    expect(again.status).toBe(303);
    expect(again.location).toMatch(/^\/mfa\?/);
    const page = await b.follow(again);
    expect(page.body).toContain('action="/mfa/totp"');
    expect(page.body).not.toContain('action="/consent"');
    // prompt=none answers login_required to the client instead of asking.
    const none = await b.get(authorizeUrl({ prompt: 'none' }).url);
    expect(queryOf(none.location).error).toBe('login_required');
  });

  it('TOTP passes the step: acr "2", amr with otp, auth_time in the ID and access tokens', async () => {
    const b = new Browser(server.url);
    const { url, verifier } = authorizeUrl({ scope: 'openid orders:read', max_age: '600' });
    const mfa = await b.follow(await password(b, await b.get(url), ALICE));
    const before = await serverNow(server);
    const passed = await postTotp(b, mfa, totpCode(ALICE_SECRET, before));
    expect(passed.status, passed.body.slice(0, 300)).toBe(303);
    const consent = await b.follow(passed);
    const redirect = await approve(b, consent);
    const q = queryOf(redirect.location);
    const t = await token(server, q.code!, verifier);
    const id = claimsOf(t.id_token);
    const at = claimsOf(t.access_token);
    expect(id.acr).toBe('2');
    expect(id.amr).toEqual(['pwd', 'otp', 'mfa']);
    expect(at.acr).toBe('2');
    expect(at.amr).toEqual(['pwd', 'otp', 'mfa']);
    // auth_time is the moment the factor was passed (the session was replaced then).
    expect(Number(id.auth_time) * 1000).toBeGreaterThanOrEqual(before - 1000);
  });

  it('a TOTP code is accepted once (replay in another session is refused with mfa.failed)', async () => {
    const now = await serverNow(server);
    const code = totpCode(DAVE_SECRET, now);
    const b1 = new Browser(server.url);
    const m1 = await b1.follow(await password(b1, await b1.get(authorizeUrl().url), DAVE));
    expect((await postTotp(b1, m1, code)).status).toBe(303);
    const b2 = new Browser(server.url);
    const m2 = await b2.follow(await password(b2, await b2.get(authorizeUrl().url), DAVE));
    const replay = await postTotp(b2, m2, code);
    expect(replay.status).toBe(401);
    expect(replay.body).toContain('already used');
    // The refused session is still password-only: no consent page.
    const still = await b2.get(authorizeUrl().url);
    expect(still.location).toMatch(/^\/mfa\?/);
    const ev = await readEvents(server, "WHERE type = 'mfa.failed'");
    expect(ev.some((e) => e.data.reason === 'replayed' && e.data.factor === 'totp')).toBe(true);
  });

  it('brute force: wrong codes are counted per account across sessions and lock the step, even for a right code', async () => {
    const now = await serverNow(server);
    const bad = wrongCode(CAROL_SECRET, now);
    const sessions = [new Browser(server.url), new Browser(server.url)];
    const pages: Res[] = [];
    for (const b of sessions) pages.push(await b.follow(await password(b, await b.get(authorizeUrl().url), CAROL)));
    expect((await postTotp(sessions[0]!, pages[0]!, bad)).status).toBe(401);
    expect((await postTotp(sessions[0]!, pages[0]!, bad)).status).toBe(401);
    // The third failure comes from the other session: the count is the account's.
    const third = await postTotp(sessions[1]!, pages[1]!, bad);
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBe('600');
    const right = await postTotp(sessions[1]!, pages[1]!, totpCode(CAROL_SECRET, await serverNow(server)));
    expect(right.status).toBe(429);
    const failed = (await readEvents(server, "WHERE type = 'mfa.failed'")).filter((e) => e.data.factor === 'totp');
    expect(failed.some((e) => e.data.locked === true && e.data.failures === 3)).toBe(true);
    expect(failed.some((e) => e.data.reason === 'locked')).toBe(true);
    // After the lock period the right code works again.
    const later = (await server.advanceClock(601)).now_ms;
    const ok = await postTotp(sessions[1]!, pages[1]!, totpCode(CAROL_SECRET, later));
    expect(ok.status, ok.body.slice(0, 300)).toBe(303);
  });

  it('phishing-resistant scopes: TOTP is not enough for orders:write; the request never reaches consent', async () => {
    const b = new Browser(server.url);
    const { url } = authorizeUrl({ scope: 'openid orders:write' });
    const first = await b.follow(await password(b, await b.get(url), ALICE));
    const passed = await postTotp(b, first, totpCode(ALICE_SECRET, (await server.advanceClock(30)).now_ms));
    expect(passed.status, passed.body.slice(0, 300)).toBe(303);
    // Back at /authorize the TOTP session (acr 2) is not enough: the factor step again, passkey only.
    const again = await b.get(passed.location!);
    expect(again.location).toMatch(/^\/mfa\?.*level=3/);
    const page = await b.follow(again);
    expect(page.body).toContain('needs a passkey');
    expect(page.body).not.toContain('action="/mfa/totp"');
    expect(page.body).not.toContain('action="/consent"');
    // A TOTP code posted by hand passes level 2 only; the request sends the session back to the factor step.
    const level2 = await b.get(`/mfa?return_to=${encodeURIComponent('/account/security')}`);
    const fields = formFields(level2.body, '/mfa/totp');
    const code = totpCode(ALICE_SECRET, (await server.advanceClock(30)).now_ms);
    const r = await b.post('/mfa/totp', {
      ...fields,
      code,
      return_to: new URL(page.url).searchParams.get('return_to')!,
    });
    expect(r.status, r.body.slice(0, 300)).toBe(303);
    const back = await b.get(r.location!);
    expect(back.location).toMatch(/^\/mfa\?.*level=3/);
  });

  it('the consent form cannot be posted by a password-only session', async () => {
    // A fully signed-in browser gets to consent; a password-only session of the same user posts that form.
    const full = new Browser(server.url);
    const { url } = authorizeUrl({ scope: 'openid email' });
    const mfa = await full.follow(await password(full, await full.get(url), ALICE));
    const code = totpCode(ALICE_SECRET, (await server.advanceClock(30)).now_ms);
    const consent = await full.follow(await postTotp(full, mfa, code));
    expect(consent.body).toContain('action="/consent"');
    const fields = formFields(consent.body, '/consent');
    const weak = new Browser(server.url);
    const pw = await password(weak, await weak.get(url), ALICE);
    const weakMfa = await weak.follow(pw);
    const csrf = formFields(weakMfa.body, '/mfa/totp').csrf_token!;
    const r = await weak.post('/consent', { ...fields, csrf_token: csrf, decision: 'approve' });
    expect(r.status).toBe(303);
    expect(queryOf(r.location).error).toBe('login_required');
    expect(queryOf(r.location).code).toBeUndefined();
  });

  it('the account page needs the second factor once the user has one; factor forms need the CSRF token', async () => {
    const b = new Browser(server.url);
    await password(b, await b.get('/account/security'), DAVE);
    // Skipping the factor step: the account page and its forms send the session back to it.
    const page = await b.get('/account/security');
    expect(page.status).toBe(303);
    expect(page.location).toMatch(/^\/mfa\?return_to=%2Faccount%2Fsecurity/);
    const mfa = await b.follow(page);
    const csrf = formFields(mfa.body, '/mfa/totp').csrf_token!;
    const remove = await b.post('/account/security/totp/remove', { csrf_token: csrf });
    expect(remove.status).toBe(303);
    expect(remove.location).toMatch(/^\/mfa\?/);
    const setup = await b.get('/account/security/totp');
    expect(setup.location).toMatch(/^\/mfa\?/);
    // Without the session's CSRF token a factor form is refused before anything is checked.
    const noCsrf = await b.post('/mfa/totp', { code: '000000', return_to: '/account/security' });
    expect(noCsrf.status).toBe(403);
    const rows = await query<{ secret_enc: string }>(server, 'SELECT secret_enc FROM mfa_totp');
    expect(rows.length).toBeGreaterThan(0);
  });

  it('TOTP secrets are stored encrypted under the KEK, never in the clear', async () => {
    const rows = await query<{ secret_enc: string }>(server, 'SELECT secret_enc FROM mfa_totp');
    expect(rows.length).toBeGreaterThanOrEqual(3);
    for (const r of rows) {
      expect(r.secret_enc).toMatch(/^v1\./);
      for (const secret of [ALICE_SECRET, CAROL_SECRET, DAVE_SECRET]) expect(r.secret_enc).not.toContain(secret);
    }
  });

  it('users without a factor sign in with a password (policy does not ask); per-client require_mfa does', async () => {
    const b = new Browser(server.url);
    const { url, verifier } = authorizeUrl();
    const consent = await b.follow(await password(b, await b.get(url), BOB));
    const q = queryOf((await approve(b, consent)).location);
    const t = await token(server, q.code!, verifier);
    expect(claimsOf(t.id_token).acr).toBe('1');
    expect(claimsOf(t.id_token).amr).toEqual(['pwd']);
    // The "secure" client requires MFA: bob has no factor, so he is sent to enrol (not to consent).
    const secure = await b.get(
      authorizeUrl({ client_id: 'secure', redirect_uri: 'https://secure.example.com/cb' }).url,
    );
    expect(secure.status).toBe(303);
    expect(secure.location).toMatch(/^\/account\/security\?return_to=.*required=2/);
  });
});

describe('step-up via acr_values on an existing session (mfa.require_enrolled: false)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(baseConfig({ require_enrolled: false }));
  });
  afterAll(async () => server?.close());

  it('a password session gets acr "1"; acr_values=2 asks only for the factor, then tokens carry acr "2"', async () => {
    const b = new Browser(server.url);
    const first = authorizeUrl();
    const consent = await b.follow(await password(b, await b.get(first.url), ALICE));
    const q1 = queryOf((await approve(b, consent)).location);
    const t1 = await token(server, q1.code!, first.verifier);
    expect(claimsOf(t1.id_token).acr).toBe('1');

    // prompt=none cannot step up.
    const none = await b.get(authorizeUrl({ acr_values: '2', prompt: 'none' }).url);
    expect(queryOf(none.location).error).toBe('login_required');

    await server.advanceClock(60);
    const second = authorizeUrl({ acr_values: '2' });
    const r = await b.get(second.url);
    // The session is kept: the factor step, not the login page.
    expect(r.location).toMatch(/^\/mfa\?/);
    const mfa = await b.follow(r);
    const passed = await postTotp(b, mfa, totpCode(ALICE_SECRET, await serverNow(server)));
    const done = await b.follow(passed);
    expect(done.status, done.body.slice(0, 300)).toBe(303);
    const q2 = queryOf(done.location);
    const t2 = await token(server, q2.code!, second.verifier);
    const id2 = claimsOf(t2.id_token);
    expect(id2.acr).toBe('2');
    expect(id2.amr).toEqual(['pwd', 'otp', 'mfa']);
    expect(Number(id2.auth_time)).toBeGreaterThan(Number(claimsOf(t1.id_token).auth_time));
    expect(claimsOf(t2.access_token).acr).toBe('2');
    // Without acr_values the stronger session keeps answering with its acr.
    const third = authorizeUrl();
    const q3 = queryOf((await b.get(third.url)).location);
    expect(claimsOf((await token(server, q3.code!, third.verifier)).id_token).acr).toBe('2');
  });

  it('discovery lists acr_values_supported', async () => {
    const r = await fetch(`${server.url}/.well-known/openid-configuration`);
    expect(((await r.json()) as Record<string, unknown>).acr_values_supported).toEqual(['1', '2', '3']);
  });
});

describe('mfa.required: enrolment on the account page, recovery codes, device flow, reset-mfa', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(baseConfig({ required: true }));
  });
  afterAll(async () => server?.close());

  let bobSecret = '';
  let recovery: string[] = [];

  it('a user without a factor must enrol TOTP (QR code, first code) before consent; then acr "2"', async () => {
    const b = new Browser(server.url);
    const { url, verifier } = authorizeUrl();
    const enrol = await b.follow(await password(b, await b.get(url), BOB));
    expect(enrol.url).toContain('/account/security?');
    expect(enrol.body).toContain('needs a second factor');
    const setup = /href="(\/account\/security\/totp[^"]*)"/.exec(enrol.body)![1]!;
    const totpPage = await b.get(unescapeHtml(setup));
    expect(totpPage.status).toBe(200);
    expect(totpPage.body).toMatch(/<img src="data:image\/svg\+xml;base64,[A-Za-z0-9+/=]+"/);
    expect(totpPage.headers.get('content-security-policy')).toContain("img-src 'self' https: data:");
    expect(totpPage.headers.get('content-security-policy')).not.toContain('script-src');
    bobSecret = /id="totp-secret">([A-Z2-7 ]+)</.exec(totpPage.body)![1]!.replace(/ /g, '');
    const fields = formFields(totpPage.body, '/account/security/totp');
    const wrong = await b.post('/account/security/totp', {
      ...fields,
      code: wrongCode(bobSecret, await serverNow(server)),
    });
    expect(wrong.status).toBe(400);
    const ok = await b.post('/account/security/totp', {
      ...fields,
      code: totpCode(bobSecret, await serverNow(server)),
    });
    expect(ok.status, ok.body.slice(0, 300)).toBe(303);
    const consent = await b.follow(ok);
    const q = queryOf((await approve(b, consent)).location);
    const t = await token(server, q.code!, verifier);
    expect(claimsOf(t.id_token).acr).toBe('2');
    const enrolled = await readEvents(server, "WHERE type = 'mfa.enrolled'");
    expect(enrolled.some((e) => e.data.factor === 'totp' && e.data.username === 'bob' && e.actor === null)).toBe(true);
    expect(enrolled.some((e) => e.data.factor === 'totp' && e.data.username === 'alice' && e.actor === 'config')).toBe(
      true,
    );

    // Recovery codes: created on the account page (this session passed the factor), shown once.
    const account = await b.get('/account/security');
    expect(account.status).toBe(200);
    expect(account.headers.get('content-security-policy')).toContain("script-src 'self'");
    const created = await b.post(
      '/account/security/recovery-codes',
      formFields(account.body, '/account/security/recovery-codes'),
    );
    recovery = [...created.body.matchAll(/<code>([a-z0-9-]{14})<\/code>/g)].map((m) => m[1]!);
    expect(recovery).toHaveLength(10);
  });

  it('a recovery code passes the factor step once; the same code is refused after', async () => {
    const use = async () => {
      const b = new Browser(server.url);
      const mfa = await b.follow(await password(b, await b.get(authorizeUrl().url), BOB));
      return b.post('/mfa/recovery', { ...formFields(mfa.body, '/mfa/recovery'), code: recovery[0]!.toUpperCase() });
    };
    const first = await use();
    expect(first.status, first.body.slice(0, 300)).toBe(303);
    const second = await use();
    expect(second.status).toBe(401);
    const failed = await readEvents(server, "WHERE type = 'mfa.failed'");
    expect(failed.some((e) => e.data.factor === 'recovery_code' && e.data.reason === 'wrong_code')).toBe(true);
  });

  it('the device verification page needs the second factor too', async () => {
    const da = await postForm(`${server.url}/device_authorization`, { client_id: 'tv', scope: 'openid orders:read' });
    expect(da.status, da.text).toBe(200);
    const userCode = String(da.json!.user_code);
    const b = new Browser(server.url);
    await password(b, await b.get('/device'), ALICE);
    // Skip the factor step the login sent us to: the device page itself refuses to go on.
    const entry = await b.get('/device');
    expect(entry.status).toBe(200);
    const r = await b.post('/device', { ...formFields(entry.body, '/device'), user_code: userCode });
    expect(r.status).toBe(303);
    expect(r.location).toMatch(/^\/mfa\?return_to=%2Fdevice/);
    const poll = await postForm(`${server.url}/token`, {
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
      client_id: 'tv',
      device_code: String(da.json!.device_code),
    });
    expect(poll.json!.error).toBe('authorization_pending');
  });

  it('portcullis users reset-mfa removes every factor, ends sessions and writes mfa.removed', async () => {
    const out = await server.cli(['users', 'reset-mfa', 'bob']);
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toContain('reset MFA for bob: totp removed, 0 passkey(s), 10 recovery code(s)');
    const removed = await readEvents(server, "WHERE type = 'mfa.removed'");
    expect(removed.at(-1)).toMatchObject({ actor: 'cli', data: { factor: 'all', username: 'bob', totp: true } });
    // Bob signs in again: with mfa.required he must enrol again (the old secret no longer works).
    const b = new Browser(server.url);
    const next = await b.follow(await password(b, await b.get(authorizeUrl().url), BOB));
    expect(next.url).toContain('/account/security?');
    const missing = await server.cli(['users', 'reset-mfa', 'nobody']);
    expect(missing.code).not.toBe(0);
  });

  it('removing a factor on the account page writes mfa.removed', async () => {
    const b = new Browser(server.url);
    const mfa = await b.follow(await password(b, await b.get('/account/security'), DAVE));
    const code = totpCode(DAVE_SECRET, (await server.advanceClock(30)).now_ms);
    const account = await b.follow(await postTotp(b, mfa, code));
    expect(account.body).toContain('Sign-in security');
    const r = await b.post('/account/security/totp/remove', formFields(account.body, '/account/security/totp/remove'));
    expect(r.status).toBe(303);
    const removed = await readEvents(server, "WHERE type = 'mfa.removed'");
    expect(removed.at(-1)).toMatchObject({ actor: null, data: { factor: 'totp', username: 'dave' } });
  });
});

describe('policy tightened after a grant was made or while a device request waits', () => {
  let server: RunningServer;
  beforeAll(async () => {
    const config = baseConfig({});
    (config.clients as Array<Record<string, unknown>>)[0]!.scope = 'openid offline_access orders:read';
    server = await startServer(config);
  });
  afterAll(async () => server?.close());

  it('approving re-checks the factor policy: a password-only session cannot approve once the client requires MFA', async () => {
    const da = await postForm(`${server.url}/device_authorization`, { client_id: 'tv', scope: 'openid orders:read' });
    expect(da.status, da.text).toBe(200);
    const b = new Browser(server.url);
    await password(b, await b.get('/device'), BOB);
    const entry = await b.get('/device');
    const ticket = await b.post('/device', {
      ...formFields(entry.body, '/device'),
      user_code: String(da.json!.user_code),
    });
    expect(ticket.location).toMatch(/^\/device\/confirm\?/);
    const confirm = await b.get(ticket.location!);
    const fields = formFields(confirm.body, '/device/confirm');
    // A password-only grant with a refresh token, and a code not yet redeemed.
    const first = authorizeUrl({ scope: 'openid offline_access orders:read' });
    const q1 = queryOf((await approve(b, await b.follow(await b.get(first.url)))).location);
    const refreshToken = ((await token(server, q1.code!, first.verifier)) as unknown as { refresh_token: string })
      .refresh_token;
    expect(refreshToken).toBeDefined();
    const second = authorizeUrl({ scope: 'openid offline_access orders:read' });
    const q2 = queryOf((await b.get(second.url)).location);
    expect(q2.code).toBeDefined();
    // The administrator now requires MFA (configuration change and restart).
    const clients = server.config.clients as Array<Record<string, unknown>>;
    clients.find((c) => c.client_id === 'tv')!.require_mfa = true;
    server.config.mfa = { ...(server.config.mfa as object), required: true };
    writeFileSync(server.configPath, toYaml(server.config));
    await server.restart();
    const r = await b.post('/device/confirm', { ...fields, decision: 'approve' });
    expect(r.status).toBe(303);
    expect(r.location).toMatch(/^\/account\/security\?return_to=%2Fdevice/);
    const poll = await postForm(`${server.url}/token`, {
      grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
      client_id: 'tv',
      device_code: String(da.json!.device_code),
    });
    expect(poll.json!.error).toBe('authorization_pending');
    // Neither the old grant's refresh token nor the outstanding code yields a token any more.
    const refreshed = await postForm(`${server.url}/token`, {
      grant_type: 'refresh_token',
      client_id: 'web',
      refresh_token: refreshToken,
    });
    expect(refreshed.status).toBe(400);
    expect(refreshed.json!.error).toBe('invalid_grant');
    const late = await postForm(`${server.url}/token`, {
      grant_type: 'authorization_code',
      client_id: 'web',
      code: q2.code!,
      code_verifier: second.verifier,
      redirect_uri: WEB_CB,
    });
    expect(late.json!.error).toBe('invalid_grant');
  });
});

describe('the factor step is rate limited per address across accounts (throttle.mfa_per_ip)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    const config = baseConfig({ max_failures: 50 });
    config.throttle = { mfa_per_ip: { limit: 3, window: '5m' } };
    server = await startServer(config);
  });
  afterAll(async () => server?.close());

  it('a fourth code from one address in the window gets 429 with Retry-After, even for the right code', async () => {
    // Two accounts, one address: the per-account lock (50) is far away; the address limit (3) is not.
    const pages: Array<{ b: Browser; page: Res }> = [];
    for (const user of [ALICE, CAROL]) {
      const b = new Browser(server.url);
      const page = await b.follow(await password(b, await b.get(authorizeUrl().url), user));
      pages.push({ b, page });
    }
    for (const i of [0, 1, 0]) {
      const r = await postTotp(pages[i]!.b, pages[i]!.page, wrongCode(CAROL_SECRET, await serverNow(server)));
      expect(r.status).toBe(401);
    }
    const right = await postTotp(pages[1]!.b, pages[1]!.page, totpCode(CAROL_SECRET, await serverNow(server)));
    expect(right.status).toBe(429);
    expect(Number(right.headers.get('retry-after'))).toBeGreaterThan(0);
    const hits = await readEvents(server, "WHERE type = 'rate_limit.hit'");
    expect(hits.map((e) => e.data.rule)).toContain('mfa_per_ip');
  });
});
