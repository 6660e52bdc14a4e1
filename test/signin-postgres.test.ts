/** The sign-in flow end to end on PostgreSQL storage (the storage contract covers each port; this the wiring). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields, queryOf } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import {
  createPostgresDatabase,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';
import { authorizeUrl, codeFlow, signInConfig } from './helpers/signin.ts';

const available = postgresAvailable('signin-postgres.test.ts');
const d = available ? describe : describe.skip;

d('sign-in on PostgreSQL', () => {
  let db: TestDatabase;
  let server: RunningServer;
  beforeAll(async () => {
    db = await createPostgresDatabase(POSTGRES_URL);
    server = await startServer(signInConfig().config, { storageUrl: db.url });
  });
  afterAll(async () => {
    await server?.close();
    await db?.drop();
  });

  it('code flow, remembered consent, prompt=none, logout, users disable', async () => {
    const b = new Browser(server.url);
    const q = await codeFlow(b, authorizeUrl().url);
    expect(q).toMatchObject({ state: 'st-123', iss: server.issuer });
    const again = await b.get(authorizeUrl({ prompt: 'none' }).url);
    expect(queryOf(again.location).code).toBeDefined();
    const page = await b.get('/logout');
    await b.post('/logout', formFields(page.body, '/logout'));
    const after = await b.get(authorizeUrl({ prompt: 'none' }).url);
    expect(queryOf(after.location).error).toBe('login_required');

    const b2 = new Browser(server.url);
    await codeFlow(b2, authorizeUrl().url);
    const dis = await server.cli(['users', 'disable', 'alice']);
    expect(dis.code, dis.stderr).toBe(0);
    expect(dis.stdout).toContain('1 session(s) ended, 3 grant(s) revoked');
    const gone = await b2.get(authorizeUrl({ prompt: 'none' }).url);
    expect(queryOf(gone.location).error).toBe('login_required');
    const types = new Set((await readEvents(server)).map((e) => e.type));
    for (const t of [
      'session.created',
      'session.ended',
      'consent.granted',
      'authorization_code.issued',
      'user.disabled',
    ])
      expect(types.has(t)).toBe(true);
  });
});
