/**
 * Sign-in pages and sessions, black-box: security headers, CSRF, return_to, cookie attributes, consent withdrawal,
 * RP-initiated logout, the users CLI, and idle/absolute session timeouts (with the fake clock, last).
 */
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { Browser, formFields, queryOf } from './helpers/browser.ts';
import { query, readEvents } from './helpers/db.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { signAsServer } from './helpers/sign-as-server.ts';
import { ALICE, authorizeUrl, BOB, codeFlow, signInConfig, signInFrom, WEB_CB } from './helpers/signin.ts';

let server: RunningServer;

beforeAll(async () => {
  const { config } = signInConfig();
  config.sessions = { idle_timeout: '10m', absolute_timeout: '1h' };
  server = await startServer(config);
});
afterAll(async () => server?.close());

async function signedIn(user = ALICE): Promise<Browser> {
  const b = new Browser(server.url);
  expect((await codeFlow(b, authorizeUrl().url, user)).code).toBeDefined();
  return b;
}

/** Whether the browser's session is alive, asked the way a client would: prompt=none. */
async function sessionAlive(b: Browser): Promise<boolean> {
  const r = await b.get(authorizeUrl({ prompt: 'none' }).url);
  const q = queryOf(r.location);
  if (q.code) return true;
  expect(q.error).toBe('login_required');
  return false;
}

async function userId(username: string): Promise<string> {
  const [row] = await query<{ id: string }>(server, 'SELECT id FROM users WHERE username = $1', [username]);
  return row!.id;
}

describe('pages: headers, markup, stylesheet', () => {
  const checkHeaders = (h: Headers) => {
    const csp = h.get('content-security-policy')!;
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("style-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("form-action 'self'");
    expect(csp).toContain("base-uri 'none'");
    expect(csp).not.toContain('unsafe-inline');
    expect(csp).not.toContain('script-src');
    expect(h.get('x-frame-options')).toBe('DENY');
    expect(h.get('referrer-policy')).toBe('no-referrer');
    expect(h.get('x-content-type-options')).toBe('nosniff');
    expect(h.get('cache-control')).toBe('no-store');
    expect(h.get('content-type')).toBe('text/html; charset=utf-8');
    expect(h.get('cross-origin-opener-policy')).toBe('same-origin');
  };
  const checkMarkup = (body: string) => {
    expect(body).toMatch(/^<!doctype html><html lang="en">/);
    expect(body).not.toMatch(/<script/i);
    expect(body).not.toMatch(/\sstyle=/i);
    expect(body).not.toMatch(/\son[a-z]+=/i);
    expect(body).toContain('<link rel="stylesheet" href="/assets/portcullis.css">');
    expect(body).toContain('name="viewport"');
    expect(body).toContain('Example Sign-in');
  };

  it('login, consent, logout and error pages carry the strict headers and accessible markup', async () => {
    const b = new Browser(server.url);
    const login = await b.follow(await b.get(authorizeUrl({ scope: 'openid email' }).url));
    checkHeaders(login.headers);
    checkMarkup(login.body);
    expect(login.body).toContain('<label for="username">');
    expect(login.body).toContain('<label for="password">');
    expect(login.body).toContain('autocomplete="current-password"');
    // The form's redirect chain ends at the client: its origin is allowed as a form target, nothing else.
    expect(login.headers.get('content-security-policy')).toContain("form-action 'self' https://app.example.com;");
    const consent = await signInFrom(b, login);
    checkHeaders(consent.headers);
    checkMarkup(consent.body);
    const error = await b.get(authorizeUrl({ client_id: 'nope' }).url);
    checkHeaders(error.headers);
    checkMarkup(error.body);
    const logout = await b.get('/logout');
    checkHeaders(logout.headers);
    checkMarkup(logout.body);
  });

  it('the stylesheet is a file with the configured colours', async () => {
    const r = await fetch(`${server.url}/assets/portcullis.css`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/css/);
    expect(await r.text()).toContain('--primary:#0b5394');
  });
});

describe('CSRF: every POST needs the token bound to the session', () => {
  it('login without, with a wrong, or with another session’s token is refused', async () => {
    const b = new Browser(server.url);
    const page = await b.follow(await b.get(authorizeUrl().url));
    const fields = formFields(page.body, '/login');
    const other = new Browser(server.url);
    const otherFields = formFields((await other.get('/login')).body, '/login');
    for (const csrf of [undefined, 'x'.repeat(43), otherFields.csrf_token]) {
      const f: Record<string, string> = { ...fields, ...ALICE };
      if (csrf === undefined) delete f.csrf_token;
      else f.csrf_token = csrf;
      const r = await b.post('/login', f);
      expect(r.status).toBe(403);
      expect(r.location).toBeUndefined();
      expect(r.headers.getSetCookie()).toEqual([]);
    }
    // Without a session cookie at all (a cross-site form post from a fresh browser).
    const bare = await new Browser(server.url).post('/login', { ...fields, ...ALICE });
    expect(bare.status).toBe(403);
    expect((await b.post('/login', { ...fields, ...ALICE })).status).toBe(303);
  });

  it('consent without the token issues nothing; the pre-login token dies at sign-in', async () => {
    const b = new Browser(server.url);
    const login = await b.follow(await b.get(authorizeUrl({ scope: 'openid profile' }).url));
    const anonymousToken = formFields(login.body, '/login').csrf_token!;
    const consent = await signInFrom(b, login);
    const fields = formFields(consent.body, '/consent');
    expect(fields.csrf_token).not.toBe(anonymousToken);
    const { csrf_token: _, ...rest } = fields;
    for (const f of [rest, { ...rest, csrf_token: anonymousToken }]) {
      const r = await b.post('/consent', { ...f, decision: 'approve' });
      expect(r.status).toBe(403);
      expect(r.location).toBeUndefined();
    }
    // The genuine form still works (the refusals consumed nothing).
    const ok = await b.post('/consent', { ...fields, decision: 'approve' });
    expect(queryOf(ok.location).code).toBeDefined();
  });
});

describe('return_to is a path on this server or refused', () => {
  const bad = [
    'https://evil.example/x',
    '//evil.example/x',
    '/\\evil.example',
    'javascript:alert(1)',
    'evil',
    '/x\r\nSet-Cookie: a=b',
  ];
  it('GET /login refuses absolute and protocol-relative targets', async () => {
    for (const t of bad) {
      const r = await new Browser(server.url).get(`/login?return_to=${encodeURIComponent(t)}`);
      expect(r.status, t).toBe(400);
      expect(r.location).toBeUndefined();
    }
  });
  it('POST /login with a bad return_to signs nobody in; a relative one is followed with 303', async () => {
    const b = new Browser(server.url);
    const fields = formFields((await b.get('/login')).body, '/login');
    for (const t of bad) {
      const r = await b.post('/login', { ...fields, ...ALICE, return_to: t });
      expect(r.status, t).toBe(400);
      expect(r.location).toBeUndefined();
      expect(r.headers.getSetCookie()).toEqual([]);
    }
    const ok = await b.post('/login', { ...fields, ...ALICE, return_to: '/account/consents?x=1' });
    expect(ok.status).toBe(303);
    expect(ok.location).toBe('/account/consents?x=1');
  });
});

describe('session cookie', () => {
  it('on an http (loopback development) issuer: HttpOnly, SameSite=Lax, Path=/, no Domain, 256 bits', async () => {
    const b = await signedIn();
    const cookies = b.setCookies.filter((c) => c.startsWith('portcullis='));
    expect(cookies.length).toBeGreaterThanOrEqual(2); // anonymous, then a new one at sign-in
    for (const c of cookies) {
      expect(c).toMatch(/^portcullis=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax$/);
      expect(c).not.toMatch(/domain=/i);
    }
    const [row] = await query<{ n: number }>(server, 'SELECT COUNT(*) AS n FROM sessions WHERE id = $1', [
      b.jar.get('portcullis'),
    ]);
    expect(Number(row!.n)).toBe(0); // stored hashed, never the cookie value
  });

  it('on an https issuer: __Host- prefix and Secure', async () => {
    const { config } = signInConfig();
    config.issuer = 'https://login.example.test';
    const s = await startServer(config);
    try {
      const b = new Browser(s.url);
      await b.get('/login');
      expect(b.setCookies[0]).toMatch(/^__Host-portcullis=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Lax; Secure$/);
    } finally {
      await s.close();
    }
  });
});

describe('consent can be withdrawn', () => {
  it('lists connected apps, withdraws (revoking grants), and asks again next time', async () => {
    const b = await signedIn(BOB);
    const list = await b.get('/account/consents');
    expect(list.status).toBe(200);
    expect(list.body).toContain('Example &lt;Web&gt; App');
    const f = formFields(list.body, '/account/consents/withdraw');
    const { csrf_token: _, ...noCsrf } = f;
    expect((await b.post('/account/consents/withdraw', noCsrf)).status).toBe(403);
    const r = await b.post('/account/consents/withdraw', f);
    expect(r.status).toBe(303);
    const after = await b.follow(r);
    expect(after.body).toContain('No application has access');
    const again = await b.get(authorizeUrl().url);
    expect(again.status).toBe(200);
    expect(again.body).toContain('action="/consent"');
    const bob = await userId('bob');
    const grants = await query<{ revoked_at: number | null; revoked_reason: string | null }>(
      server,
      'SELECT revoked_at, revoked_reason FROM grants WHERE user_id = $1',
      [bob],
    );
    expect(grants.length).toBeGreaterThan(0);
    for (const g of grants) expect(g.revoked_reason).toBe('consent_withdrawn');
    const ev = await readEvents(server, "WHERE type IN ('consent.withdrawn', 'grant.revoked') AND subject = $1", [bob]);
    expect(ev.map((e) => e.type)).toContain('consent.withdrawn');
    expect(ev.filter((e) => e.type === 'grant.revoked')).toHaveLength(grants.length);
  });

  it('the account page needs a signed-in session', async () => {
    const r = await new Browser(server.url).get('/account/consents');
    expect(r.status).toBe(303);
    expect(r.location).toBe('/login?return_to=%2Faccount%2Fconsents');
  });
});

describe('logout (end_session_endpoint)', () => {
  it('without an id_token_hint the user confirms; a confirmed POST ends the session server-side', async () => {
    const b = await signedIn();
    const stolen = b.cookieHeader();
    const page = await b.get('/logout');
    expect(page.status).toBe(200);
    expect(await sessionAlive(b)).toBe(true); // a GET (a forged link) ends nothing
    const f = formFields(page.body, '/logout');
    const forged = await b.post('/logout', { ...f, csrf_token: 'forged' });
    expect(forged.status).toBe(200); // asked to confirm again
    expect(await sessionAlive(b)).toBe(true);
    const done = await b.post('/logout', f);
    expect(done.status).toBe(200);
    expect(done.body).toContain('You are signed out');
    expect(done.headers.getSetCookie()[0]).toMatch(/^portcullis=; .*Max-Age=0/);
    // The old cookie is dead on the server too, not just deleted in the browser.
    const replay = await fetch(`${server.url}${authorizeUrl({ prompt: 'none' }).url}`, {
      headers: { cookie: stolen },
      redirect: 'manual',
    });
    expect(queryOf(replay.headers.get('location')!).error).toBe('login_required');
    const ended = await readEvents(server, "WHERE type = 'session.ended'");
    expect(ended.some((e) => e.data.reason === 'logout')).toBe(true);
  });

  it('RP-initiated with a valid id_token_hint and a registered post_logout_redirect_uri: redirect with state', async () => {
    const b = await signedIn();
    const sub = await userId('alice');
    const hint = await signAsServer(server, { sub, aud: 'web' });
    const q = new URLSearchParams({
      id_token_hint: hint,
      post_logout_redirect_uri: 'https://app.example.com/bye',
      state: 'bye-state',
    });
    const r = await b.get(`/logout?${q}`);
    expect(r.status).toBe(303);
    expect(r.location).toBe('https://app.example.com/bye?state=bye-state');
    expect(await sessionAlive(b)).toBe(false);
    const ended = await readEvents(server, "WHERE type = 'session.ended'");
    expect(ended.some((e) => e.data.reason === 'rp_logout')).toBe(true);
  });

  it('an unregistered post_logout_redirect_uri, a foreign hint or an access token as hint: error page, no logout', async () => {
    const b = await signedIn();
    const sub = await userId('alice');
    const hint = await signAsServer(server, { sub, aud: 'web' });
    const accessToken = await signAsServer(server, { sub, aud: 'web' }, { typ: 'at+jwt' });
    const otherIssuer = await signAsServer(server, { sub, aud: 'web', iss: 'https://evil.example' });
    const cases: Array<Record<string, string>> = [
      { id_token_hint: hint, post_logout_redirect_uri: 'https://app.example.com/bye/' },
      { id_token_hint: hint, post_logout_redirect_uri: 'https://evil.example/bye' },
      { id_token_hint: hint, post_logout_redirect_uri: WEB_CB },
      { id_token_hint: `${hint.slice(0, -4)}AAAA` },
      { id_token_hint: accessToken },
      { id_token_hint: otherIssuer },
      { id_token_hint: hint, client_id: 'par-only' },
      { client_id: 'nope' },
      { post_logout_redirect_uri: 'https://app.example.com/bye' },
    ];
    for (const c of cases) {
      const r = await b.get(`/logout?${new URLSearchParams(c)}`);
      expect(r.status, JSON.stringify(c)).toBe(400);
      expect(r.location).toBeUndefined();
    }
    expect(await sessionAlive(b)).toBe(true);
  });

  it('client_id with a registered post_logout_redirect_uri: confirm, then redirect', async () => {
    const b = await signedIn();
    const page = await b.get(
      `/logout?${new URLSearchParams({ client_id: 'web', post_logout_redirect_uri: 'https://app.example.com/bye', state: 's' })}`,
    );
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("form-action 'self' https://app.example.com;");
    const r = await b.post('/logout', formFields(page.body, '/logout'));
    expect(r.status).toBe(303);
    expect(r.location).toBe('https://app.example.com/bye?state=s');
    expect(await sessionAlive(b)).toBe(false);
  });
});

describe('users CLI', () => {
  it('add, list, set-password, disable (ends sessions, revokes grants), enable', async () => {
    // --password-stdin with nothing on stdin is an error; without it the user is created with no password.
    expect((await server.cli(['users', 'add', 'carol', '--password-stdin'])).code).not.toBe(0);
    const carol = await server.cli(['users', 'add', 'carol', '--email', 'carol@example.com']);
    expect(carol.code, carol.stderr).toBe(0);
    expect(carol.stdout).toContain('without a password');
    const r = await runWithInput(['users', 'add', 'dave', '--password-stdin'], 'dave has a long password\n');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('created user dave');
    expect((await runWithInput(['users', 'add', 'erin', '--password-stdin'], 'short\n')).code).not.toBe(0);
    expect((await runWithInput(['users', 'add', 'dave', '--password-stdin'], 'another long one\n')).code).not.toBe(0);

    const list = await server.cli(['users', 'list', '--json']);
    expect(list.code).toBe(0);
    const users = JSON.parse(list.stdout) as Array<Record<string, unknown>>;
    expect(users.map((u) => u.username)).toEqual(expect.arrayContaining(['alice', 'bob', 'dave']));
    expect(list.stdout).not.toContain('argon2');
    expect(users.find((u) => u.username === 'dave')).toMatchObject({ has_password: true, disabled: false });

    const dave = { username: 'dave', password: 'dave has a long password' };
    const b = await signedIn(dave);
    expect((await runWithInput(['users', 'set-password', 'dave'], 'a brand new passphrase\n')).code).toBe(0);
    const old = new Browser(server.url);
    const fields = formFields((await old.get('/login')).body, '/login');
    expect((await old.post('/login', { ...fields, ...dave })).status).toBe(401);
    const renewed = { username: 'dave', password: 'a brand new passphrase' };
    expect((await old.post('/login', { ...fields, ...renewed })).status).toBe(303);

    const dis = await server.cli(['users', 'disable', 'dave']);
    expect(dis.code, dis.stderr).toBe(0);
    expect(dis.stdout).toMatch(/disabled dave: 2 session\(s\) ended, 1 grant\(s\) revoked/);
    expect(await sessionAlive(b)).toBe(false);
    expect(await sessionAlive(old)).toBe(false);
    const again = new Browser(server.url);
    const f2 = formFields((await again.get('/login')).body, '/login');
    const refused = await again.post('/login', { ...f2, ...renewed });
    expect(refused.status).toBe(401);
    expect(refused.body).toContain('Wrong username or password.');

    const id = await userId('dave');
    const types = (await readEvents(server, 'WHERE subject = $1', [id])).map((e) => e.type);
    for (const t of [
      'user.created',
      'password.changed',
      'user.disabled',
      'session.ended',
      'grant.revoked',
      'token.revoked',
    ])
      expect(types).toContain(t);
    const [g] = await query<{ revoked_reason: string }>(
      server,
      'SELECT revoked_reason FROM grants WHERE user_id = $1',
      [id],
    );
    expect(g!.revoked_reason).toBe('user_disabled');
    const [rev] = await query<{ kind: string }>(server, "SELECT kind FROM revocations WHERE kind = 'grant'");
    expect(rev).toBeDefined();

    expect((await server.cli(['users', 'enable', 'dave'])).code).toBe(0);
    expect((await again.post('/login', { ...f2, ...renewed })).status).toBe(303);
    expect((await server.cli(['users', 'disable', 'nobody'])).code).not.toBe(0);
  });
});

async function runWithInput(args: string[], input: string) {
  const { runPortcullis } = await import('./helpers/server.ts');
  return runPortcullis([...args, '--config', server.configPath], { cwd: server.dir, env: server.env, input });
}

describe('session timeouts (fake clock; last, since they move time for the whole server)', () => {
  it('idle: a session unused for longer than sessions.idle_timeout ends; use keeps it alive', async () => {
    const b = await signedIn();
    await server.advanceClock(9 * 60);
    expect(await sessionAlive(b)).toBe(true);
    await server.advanceClock(9 * 60);
    expect(await sessionAlive(b)).toBe(true);
    await server.advanceClock(11 * 60);
    expect(await sessionAlive(b)).toBe(false);
    const ended = await readEvents(server, "WHERE type = 'session.ended'");
    expect(ended.some((e) => e.data.reason === 'idle_timeout')).toBe(true);
  });

  it('absolute: a session ends after sessions.absolute_timeout however active', async () => {
    const b = await signedIn();
    for (let i = 0; i < 6; i++) {
      await server.advanceClock(9 * 60);
      expect(await sessionAlive(b)).toBe(true);
    }
    await server.advanceClock(7 * 60); // 61 minutes after sign-in
    expect(await sessionAlive(b)).toBe(false);
    const ended = await readEvents(server, "WHERE type = 'session.ended'");
    expect(ended.some((e) => e.data.reason === 'absolute_timeout')).toBe(true);
  });

  it('a user disabled through the CLI stays disabled across a restart (config does not re-enable)', async () => {
    expect((await server.cli(['users', 'disable', 'bob'])).code).toBe(0);
    await server.restart();
    const b = new Browser(server.url);
    const f = formFields((await b.get('/login')).body, '/login');
    expect((await b.post('/login', { ...f, ...BOB })).status).toBe(401);
  });

  it('a user disabled in the configuration file: sessions end and grants are revoked at the next start', async () => {
    const b = await signedIn();
    const users = server.config.users as Array<Record<string, unknown>>;
    users[0]!.disabled = true;
    writeFileSync(server.configPath, toYaml(server.config));
    await server.restart();
    expect(await sessionAlive(b)).toBe(false);
    const id = await userId('alice');
    const live = await query(server, 'SELECT id FROM grants WHERE user_id = $1 AND revoked_at IS NULL', [id]);
    expect(live).toEqual([]);
    const ended = await readEvents(server, "WHERE type = 'session.ended' AND subject = $1 AND actor = 'config'", [id]);
    expect(ended.length).toBeGreaterThan(0);
  });
});
