/**
 * Device authorization (RFC 8628) as far as the person is concerned: /device_authorization, the verification page,
 * approve or deny, wrong codes throttled per IP and session. Polling /token is the token endpoint's suite.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields } from './helpers/browser.ts';
import { query, readEvents } from './helpers/db.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { signInConfig, signInFrom } from './helpers/signin.ts';

let server: RunningServer;

beforeAll(async () => {
  const { config } = signInConfig();
  (config.clients as unknown[]).push({
    client_id: 'tv',
    client_name: 'Living-room TV',
    token_endpoint_auth_method: 'none',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
    scope: 'openid orders:read',
  });
  config.authorization = { device_verification_attempts: 3 };
  server = await startServer(config);
});
afterAll(async () => server?.close());

async function deviceAuthorization(body: Record<string, string>) {
  const r = await fetch(`${server.url}/device_authorization`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(body),
  });
  return { status: r.status, json: (await r.json()) as Record<string, unknown>, headers: r.headers };
}

async function signedInBrowser(): Promise<Browser> {
  const b = new Browser(server.url);
  const r = await signInFrom(b, await b.get('/device'));
  expect(r.status).toBe(200);
  return b;
}

async function deviceStatus(userCode: string): Promise<string> {
  const [row] = await query<{ status: string }>(server, 'SELECT status FROM device_codes WHERE user_code = $1', [
    userCode.replace('-', ''),
  ]);
  return row!.status;
}

describe('/device_authorization', () => {
  it('answers a device code, an 8-letter user code and where to go', async () => {
    const r = await deviceAuthorization({ client_id: 'tv', scope: 'openid orders:read' });
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.json).toMatchObject({
      verification_uri: `${server.issuer}/device`,
      expires_in: 600,
      interval: 5,
    });
    expect(r.json.user_code).toMatch(/^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/);
    expect(r.json.device_code).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(r.json.verification_uri_complete).toBe(`${server.issuer}/device?user_code=${r.json.user_code}`);
    const stored = await query(server, 'SELECT * FROM device_codes WHERE device_code_hash = $1', [r.json.device_code]);
    expect(stored).toEqual([]); // stored hashed
  });

  it('refuses clients without the grant and scopes they may not have', async () => {
    expect((await deviceAuthorization({ client_id: 'web', scope: 'openid' })).json.error).toBe('unauthorized_client');
    expect((await deviceAuthorization({ client_id: 'tv', scope: 'orders:write' })).json.error).toBe('invalid_scope');
    expect((await deviceAuthorization({ client_id: 'nope', scope: 'openid' })).json.error).toBe('invalid_client');
  });
});

describe('the verification page', () => {
  it('needs a signed-in person; verification_uri_complete fills the code but approves nothing', async () => {
    const { json } = await deviceAuthorization({ client_id: 'tv', scope: 'openid orders:read' });
    const code = String(json.user_code);
    const b = new Browser(server.url);
    const first = await b.get(`/device?user_code=${code}`);
    expect(first.status).toBe(303);
    expect(first.location).toBe(`/login?${new URLSearchParams({ return_to: `/device?user_code=${code}` })}`);
    const page = await signInFrom(b, first);
    expect(page.status).toBe(200);
    expect(formFields(page.body, '/device').user_code).toBe(code);
    expect(await deviceStatus(code)).toBe('pending');
  });

  it('shows the client and scopes, then approves once (case and dashes ignored)', async () => {
    const { json } = await deviceAuthorization({ client_id: 'tv', scope: 'openid orders:read' });
    const code = String(json.user_code);
    const b = await signedInBrowser();
    const entry = formFields((await b.get('/device')).body, '/device');
    const confirm = await b.post('/device', { ...entry, user_code: code.toLowerCase().replace('-', ' ') });
    expect(confirm.status).toBe(200);
    expect(confirm.body).toContain('Living-room TV');
    expect(confirm.body).toContain('Read your orders');
    expect(await deviceStatus(code)).toBe('pending');
    const decide = formFields(confirm.body, '/device/decide');
    const { csrf_token: _, ...noCsrf } = decide;
    expect((await b.post('/device/decide', { ...noCsrf, decision: 'approve' })).status).toBe(403);
    expect(await deviceStatus(code)).toBe('pending');
    const done = await b.post('/device/decide', { ...decide, decision: 'approve' });
    expect(done.status).toBe(200);
    expect(done.body).toContain('Device connected');
    expect(await deviceStatus(code)).toBe('approved');
    const [row] = await query<{ user_id: string; amr: string }>(
      server,
      'SELECT user_id, amr FROM device_codes WHERE user_code = $1',
      [code.replace('-', '')],
    );
    const [alice] = await query<{ id: string }>(server, "SELECT id FROM users WHERE username = 'alice'");
    expect(row).toEqual({ user_id: alice!.id, amr: '["pwd"]' });
    // Decided once: a second decision is refused.
    expect((await b.post('/device/decide', { ...decide, decision: 'deny' })).status).toBe(400);
    expect(await deviceStatus(code)).toBe('approved');
    expect((await readEvents(server, "WHERE type = 'device_code.approved'")).length).toBe(1);
  });

  it('deny records the refusal', async () => {
    const { json } = await deviceAuthorization({ client_id: 'tv', scope: 'openid' });
    const code = String(json.user_code);
    const b = await signedInBrowser();
    const confirm = await b.post('/device', {
      ...formFields((await b.get('/device')).body, '/device'),
      user_code: code,
    });
    const done = await b.post('/device/decide', { ...formFields(confirm.body, '/device/decide'), decision: 'deny' });
    expect(done.body).toContain('Access denied');
    expect(await deviceStatus(code)).toBe('denied');
  });

  it('wrong codes are throttled per session (and per IP), with 429 and Retry-After', async () => {
    const b = await signedInBrowser();
    const entry = formFields((await b.get('/device')).body, '/device');
    for (let i = 0; i < 3; i++) {
      const r = await b.post('/device', { ...entry, user_code: 'BBBB-BBBB' });
      expect(r.status).toBe(400);
      expect(r.body).toContain('not valid or has expired');
    }
    const { json } = await deviceAuthorization({ client_id: 'tv', scope: 'openid' });
    const blocked = await b.post('/device', { ...entry, user_code: String(json.user_code) });
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(await deviceStatus(String(json.user_code))).toBe('pending');
    // The same IP from another session is blocked as well (all tests run from 127.0.0.1).
    const other = await signedInBrowser();
    const r = await other.post('/device', {
      ...formFields((await other.get('/device')).body, '/device'),
      user_code: String(json.user_code),
    });
    expect(r.status).toBe(429);
    expect((await readEvents(server, "WHERE type = 'device_code.verification_failed'")).length).toBe(3);
  });

  it('an expired code is refused (fake clock)', async () => {
    await server.advanceClock(16 * 60); // past the throttle window too
    const { json } = await deviceAuthorization({ client_id: 'tv', scope: 'openid' });
    await server.advanceClock(601);
    const b = await signedInBrowser();
    const r = await b.post('/device', {
      ...formFields((await b.get('/device')).body, '/device'),
      user_code: String(json.user_code),
    });
    expect(r.status).toBe(400);
  });
});
