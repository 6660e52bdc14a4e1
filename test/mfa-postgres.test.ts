/** MFA end to end on PostgreSQL storage: seeded TOTP, single use, the lock across sessions, reset-mfa. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields, queryOf, type Res } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { claimsOf, postForm } from './helpers/oauth.ts';
import {
  createPostgresDatabase,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';
import { ALICE, approve, authorizeUrl, signInConfig, WEB_CB } from './helpers/signin.ts';
import { serverNow, totpCode, wrongCode } from './helpers/totp.ts';

const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const available = postgresAvailable('mfa-postgres.test.ts');
const d = available ? describe : describe.skip;

d('MFA on PostgreSQL', () => {
  let db: TestDatabase;
  let server: RunningServer;
  beforeAll(async () => {
    db = await createPostgresDatabase(POSTGRES_URL);
    const { config } = signInConfig();
    (config.users as Array<Record<string, unknown>>)[0]!.totp_secret = SECRET;
    config.mfa = { max_failures: 2 };
    server = await startServer(config, { storageUrl: db.url });
  });
  afterAll(async () => {
    await server?.close();
    await db?.drop();
  });

  async function factorStep(url: string): Promise<{ b: Browser; page: Res }> {
    const b = new Browser(server.url);
    const login = await b.follow(await b.get(url));
    const r = await b.post('/login', { ...formFields(login.body, '/login'), ...ALICE });
    const page = await b.follow(r);
    expect(page.body).toContain('action="/mfa/totp"');
    return { b, page };
  }
  const post = (s: { b: Browser; page: Res }, code: string) =>
    s.b.post('/mfa/totp', { ...formFields(s.page.body, '/mfa/totp'), code });

  it('TOTP passes once, its replay is refused, wrong codes from two sessions lock, reset-mfa clears', async () => {
    const { url, verifier } = authorizeUrl();
    const one = await factorStep(url);
    const code = totpCode(SECRET, await serverNow(server));
    const passed = await post(one, code);
    expect(passed.status).toBe(303);
    const q = queryOf((await approve(one.b, await one.b.follow(passed))).location);
    const t = await postForm(`${server.url}/token`, {
      grant_type: 'authorization_code',
      client_id: 'web',
      code: q.code!,
      code_verifier: verifier,
      redirect_uri: WEB_CB,
    });
    expect(claimsOf(String(t.json!.id_token)).acr).toBe('2');

    const two = await factorStep(authorizeUrl().url);
    expect((await post(two, code)).status).toBe(401);
    const three = await factorStep(authorizeUrl().url);
    // The replay above was failure 1; this is failure 2 from another session: locked.
    const locked = await post(three, wrongCode(SECRET, await serverNow(server)));
    expect(locked.status).toBe(429);

    const reset = await server.cli(['users', 'reset-mfa', 'alice']);
    expect(reset.code, reset.stderr).toBe(0);
    const types = (await readEvents(server, "WHERE type LIKE 'mfa.%'")).map((e) => `${e.type}:${e.data.reason ?? ''}`);
    expect(types).toEqual(['mfa.enrolled:', 'mfa.failed:replayed', 'mfa.failed:wrong_code', 'mfa.removed:']);
  });
});
