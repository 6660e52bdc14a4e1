/**
 * Correlation and timelines, black-box: a person signs in and authorises a client in a browser, the client redeems
 * the code, refreshes, calls an API through the gateway, then a spent refresh token is replayed (the grant is
 * revoked) and an administrator revokes every token of the client. The events share the session and grant ids and
 * carry the client IP and request id; `portcullis audit timeline` and GET /admin/audit/timeline tell the token's
 * story in order, including the revocation that covered it without naming it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminGet, adminToken, withAdmin } from './helpers/admin.ts';
import { Browser, formFields } from './helpers/browser.ts';
import { query } from './helpers/db.ts';
import { bearer, call, startUpstream, type Upstream } from './helpers/gateway.ts';
import { claimsOf, postForm, type TestClient } from './helpers/oauth.ts';
import { freePort, type RunningServer, startServer } from './helpers/server.ts';
import { API, authorizeUrl, codeFlow, signInConfig, WEB_CB } from './helpers/signin.ts';

interface Row {
  id: number | string;
  type: string;
  client_id: string | null;
  subject: string | null;
  jti: string | null;
  grant_id: string | null;
  session_id: string | null;
  ip: string | null;
  request_id: string | null;
  data: string;
}

interface Entry {
  type: string;
  kind: string;
  via: string;
  jti: string | null;
  grant_id: string | null;
  session_id: string | null;
  ip: string | null;
  summary: string;
}

let server: RunningServer;
let upstream: Upstream;
let gw: string;
let ops: TestClient;
/** Filled by the flow in beforeAll. */
const flow = {
  sessionId: '',
  grantId: '',
  firstJti: '',
  jti: '',
  subject: '',
};

const events = (where: string, params: unknown[] = []) =>
  query<Row>(
    server,
    `SELECT id, type, client_id, subject, jti, grant_id, session_id, ip, request_id, data FROM events ${where} ORDER BY id`,
    params,
  );

async function token(form: Record<string, string>): Promise<Record<string, unknown>> {
  const r = await postForm(`${server.url}/token`, { client_id: 'web', ...form });
  return { status: r.status, ...r.json };
}

/** Waits (bounded) for a condition the server reaches in real time (usage flush, sealing). */
async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 8000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  upstream = await startUpstream();
  const gwPort = await freePort();
  const base = signInConfig().config;
  base.gateway = {
    listen: { host: '127.0.0.1', port: gwPort },
    routes: [
      {
        name: 'orders',
        path_prefix: '/orders',
        upstream: upstream.url,
        resource: API,
        scopes: { '*': ['orders:read'] },
      },
    ],
  };
  const admin = withAdmin(base);
  ops = admin.ops;
  server = await startServer(admin.config);
  gw = `http://127.0.0.1:${gwPort}`;

  // 1. Sign in and approve in a browser; 2. redeem the code; 3. refresh; 4. use the new token at the gateway.
  const b = new Browser(server.url);
  const { url, verifier } = authorizeUrl({ scope: 'orders:read' });
  const q = await codeFlow(b, url);
  const t1 = await token({
    grant_type: 'authorization_code',
    code: q.code!,
    code_verifier: verifier,
    redirect_uri: WEB_CB,
  });
  expect(t1.status, JSON.stringify(t1)).toBe(200);
  const t2 = await token({ grant_type: 'refresh_token', refresh_token: String(t1.refresh_token) });
  expect(t2.status, JSON.stringify(t2)).toBe(200);
  const at = String(t2.access_token);
  flow.firstJti = String(claimsOf(String(t1.access_token)).jti);
  flow.jti = String(claimsOf(at).jti);
  flow.grantId = String(claimsOf(at).grant_id);
  flow.subject = String(claimsOf(at).sub);
  for (let i = 0; i < 3; i++) expect((await call(gw, '/orders/1', { headers: bearer(at) })).status).toBe(200);
  await until('gateway.usage', async () => {
    const u = await events("WHERE type = 'gateway.usage' AND jti = $1", [flow.jti]);
    return u.length ? u : undefined;
  });
  // 5. The spent refresh token comes back: an alert, and the grant is revoked. 6. The token is refused after that.
  const reused = await token({ grant_type: 'refresh_token', refresh_token: String(t1.refresh_token) });
  expect(reused.error).toBe('invalid_grant');
  expect((await call(gw, '/orders/1', { headers: bearer(at) })).status).toBe(401);
  // 7. An administrator revokes every token of the client (covers the token without naming it). 8. Logout.
  const rev = await server.cli(['revoke', '--client', 'web', '--reason', 'incident 42']);
  expect(rev.code, rev.stderr).toBe(0);
  const page = await b.get('/logout');
  const done = await b.post('/logout', formFields(page.body, '/logout'));
  expect(done.status).toBeLessThan(400);
  const created = await events("WHERE type = 'session.created'");
  flow.sessionId = String(created.at(-1)?.session_id);
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await upstream?.close();
});

describe('correlation: every event carries the ids that link it', () => {
  it('the sign-in, consent, code, tokens, refresh, replay and revocation share the browser session and the grant', async () => {
    expect(flow.sessionId).toMatch(/^[0-9a-f]{64}$/);
    const bySession = await events('WHERE session_id = $1', [flow.sessionId]);
    const types = bySession.map((e) => e.type);
    for (const t of [
      'session.created',
      'consent.granted',
      'grant.created',
      'authorization_code.issued',
      'authorization_code.redeemed',
      'token.issued',
      'refresh_token.issued',
      'refresh_token.rotated',
      'refresh_token.reused',
      'grant.revoked',
      'session.ended',
    ])
      expect(types, t).toContain(t);
    // Everything about the grant names it, and was caused by a request from this address with a request id.
    const byGrant = await events('WHERE grant_id = $1', [flow.grantId]);
    expect(byGrant.map((e) => e.type)).toEqual(
      expect.arrayContaining([
        'grant.created',
        'token.issued',
        'refresh_token.rotated',
        'gateway.usage',
        'gateway.denied',
      ]),
    );
    for (const e of byGrant) {
      // The gateway knows the token (jti, grant), not the browser session: it joins through the grant id.
      if (!e.type.startsWith('gateway.')) expect(e.session_id, e.type).toBe(flow.sessionId);
      expect(e.ip, e.type).toBe('127.0.0.1');
      if (e.type !== 'gateway.usage') expect(e.request_id, e.type).toBeTruthy(); // usage aggregates many requests
    }
    // The grant's revocation names the grant and the request that caused it (the replay).
    const replay = byGrant.find((e) => e.type === 'refresh_token.reused')!;
    const grantRevoked = byGrant.find((e) => e.type === 'grant.revoked')!;
    expect(grantRevoked.request_id).toBe(replay.request_id);
    const revokedByGrant = (await events("WHERE type = 'token.revoked' AND grant_id = $1", [flow.grantId]))[0];
    expect(JSON.parse(revokedByGrant!.data)).toMatchObject({ by: 'grant', reason: 'refresh_token_reused' });
    // Sign-in events: the address, the request, and (for the session) its id; the consent ran in that session.
    const login = (await events("WHERE type = 'login.succeeded'")).at(-1)!;
    expect(login.ip).toBe('127.0.0.1');
    expect(login.request_id).toBeTruthy();
    const consent = bySession.find((e) => e.type === 'consent.granted')!;
    const issued = bySession.find((e) => e.type === 'authorization_code.issued')!;
    expect(consent.request_id).toBe(issued.request_id);
    const ended = bySession.find((e) => e.type === 'session.ended')!;
    expect(JSON.parse(ended.data)).toMatchObject({ reason: 'logout' });
    expect(ended.ip).toBe('127.0.0.1');
  });
});

describe('portcullis audit timeline', () => {
  it('--jti tells the token story in order: issued, refreshed, used at the gateway, alert, revoked, denied, revoked by client', async () => {
    expect((await server.cli(['audit', 'seal'])).code).toBe(0);
    const r = await server.cli(['audit', 'timeline', '--jti', flow.jti, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const t = JSON.parse(r.stdout) as { entries: Entry[]; truncated: boolean };
    expect(t.truncated).toBe(false);
    const seq = t.entries.map((e) => e.type);
    const pos = (type: string, pred: (e: Entry) => boolean = () => true) =>
      t.entries.findIndex((e) => e.type === type && pred(e));
    const issued = pos('token.issued', (e) => e.jti === flow.jti);
    const rotated = pos('refresh_token.rotated');
    const used = pos('gateway.usage');
    const alert = pos('refresh_token.reused');
    const grantRevoked = pos('grant.revoked');
    const denied = pos('gateway.denied');
    const byClient = pos('token.revoked', (e) => e.via === 'client');
    for (const [name, i] of Object.entries({ issued, rotated, used, alert, grantRevoked, denied, byClient }))
      expect(i, `${name} in ${seq.join(', ')}`).toBeGreaterThanOrEqual(0);
    expect(pos('grant.created')).toBeLessThan(issued);
    expect(rotated).toBeLessThanOrEqual(issued + 1);
    expect(issued).toBeLessThan(used);
    expect(used).toBeLessThan(alert);
    expect(alert).toBeLessThan(grantRevoked);
    expect(grantRevoked).toBeLessThan(denied);
    expect(denied).toBeLessThan(byClient);
    expect(t.entries[alert]!.kind).toBe('alert');
    expect(t.entries[used]!.kind).toBe('used');
    expect(t.entries[used]!.summary).toMatch(/used 3× at route orders/);
    expect(t.entries[byClient]!.summary).toMatch(/revoked by client: incident 42/);
    // The grant's first token is part of the grant's story, not of this token's own events.
    expect(t.entries.find((e) => e.jti === flow.firstJti)?.via).toBe('grant');

    const text = await server.cli(['audit', 'timeline', '--jti', flow.jti]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^timeline for jti /);
    expect(text.stdout).toMatch(/issued\s+token\.issued/);
    expect(text.stdout).toMatch(/used\s+gateway\.usage/);
    expect(text.stdout).toMatch(/alert\s+refresh_token\.reused/);
    expect(text.stdout).toMatch(/revoked\s+token\.revoked .*\[via client\]/);
  });

  it('--grant, --subject, --client and --ip select by their column; a bad selector is refused', async () => {
    const kinds = async (args: string[]) => {
      const r = await server.cli(['audit', 'timeline', ...args, '--json']);
      expect(r.code, r.stderr).toBe(0);
      return (JSON.parse(r.stdout) as { entries: Entry[] }).entries;
    };
    const g = await kinds(['--grant', flow.grantId]);
    expect(g.filter((e) => e.type === 'token.issued')).toHaveLength(2);
    expect(g.some((e) => e.type === 'token.revoked' && e.via === 'client')).toBe(true);
    expect((await kinds(['--subject', flow.subject])).some((e) => e.type === 'session.created')).toBe(true);
    expect((await kinds(['--client', 'web'])).some((e) => e.type === 'token.revoked')).toBe(true);
    expect((await kinds(['--ip', '127.0.0.1'])).some((e) => e.type === 'login.succeeded')).toBe(true);
    const none = await server.cli(['audit', 'timeline']);
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/exactly one of --grant/);
    const two = await server.cli(['audit', 'timeline', '--jti', 'a', '--grant', 'b']);
    expect(two.code).not.toBe(0);
  });
});

describe('GET /admin/audit/timeline', () => {
  it('answers the same story as JSON, and 400 invalid_request naming the parameter for bad selectors', async () => {
    const tok = await adminToken(server, ops);
    const r = await adminGet(server, `/admin/audit/timeline?jti=${encodeURIComponent(flow.jti)}`, tok);
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const entries = r.json.entries as Entry[];
    const types = entries.map((e) => e.type);
    expect(types).toEqual(
      expect.arrayContaining(['token.issued', 'refresh_token.rotated', 'gateway.usage', 'refresh_token.reused']),
    );
    expect(types.indexOf('token.issued')).toBeLessThan(types.indexOf('gateway.usage'));
    expect(entries.some((e) => e.type === 'token.revoked' && e.via === 'client')).toBe(true);

    const limited = await adminGet(server, `/admin/audit/timeline?grant=${flow.grantId}&limit=2`, tok);
    expect(limited.status).toBe(200);
    expect((limited.json.entries as Entry[]).map((e) => e.type)).toEqual([
      'grant.created',
      'authorization_code.issued',
    ]);
    expect(limited.json.truncated).toBe(true);

    for (const [path, word] of [
      ['/admin/audit/timeline', 'selector'],
      ['/admin/audit/timeline?jti=', 'jti'],
      ['/admin/audit/timeline?jti=a&grant=b', 'only one selector'],
      ['/admin/audit/timeline?ip=1&ip=2', 'ip'],
      ['/admin/audit/timeline?client=web&limit=0', 'limit'],
      ['/admin/audit/timeline?client=web&limit=x', 'limit'],
    ] as const) {
      const bad = await adminGet(server, path, tok);
      expect(bad.status, path).toBe(400);
      expect(bad.json.error, path).toBe('invalid_request');
      expect(String(bad.json.error_description), path).toContain(word);
    }
    const anonymous = await fetch(`${server.url}/admin/audit/timeline?jti=${flow.jti}`);
    expect(anonymous.status).toBe(401);
  });
});
