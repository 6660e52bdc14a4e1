/**
 * The server's WebAuthn checks, black-box over HTTP with a software authenticator that can break one thing at a
 * time (the happy path in a real browser is browser-passkey.test.ts): user verification required, origin, single-use
 * challenge, signature counter that must grow (a cloned authenticator), and a credential that belongs to the user.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields, type Res } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, authorizeUrl, signInConfig } from './helpers/signin.ts';
import { totpCode } from './helpers/totp.ts';
import { pageOptions, SoftAuthenticator } from './helpers/webauthn.ts';

const ALICE_SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';
const DAVE = { username: 'dave', password: 'dave has a long passphrase too' };
const DAVE_SECRET = 'MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U';

let server: RunningServer;
beforeAll(async () => {
  const { config } = signInConfig();
  (config.users as Array<Record<string, unknown>>)[0]!.totp_secret = ALICE_SECRET;
  (config.users as Array<Record<string, unknown>>).push({ ...DAVE, totp_secret: DAVE_SECRET });
  config.mfa = { max_failures: 50 };
  server = await startServer(config);
});
afterAll(async () => server?.close());

async function password(b: Browser, user: { username: string; password: string }): Promise<Res> {
  const login = await b.follow(await b.get(authorizeUrl().url));
  const r = await b.post('/login', { ...formFields(login.body, '/login'), ...user });
  expect(r.status).toBe(303);
  return b.follow(r);
}

/** Password + TOTP, then the account page (where passkeys are added). */
async function accountPage(b: Browser, user: typeof ALICE, secret: string): Promise<Res> {
  const mfa = await password(b, user);
  const now = (await server.advanceClock(30)).now_ms;
  const r = await b.post('/mfa/totp', {
    ...formFields(mfa.body, '/mfa/totp'),
    code: totpCode(secret, now),
    return_to: '/account/security',
  });
  expect(r.status, r.body.slice(0, 300)).toBe(303);
  return b.get('/account/security');
}

async function register(b: Browser, page: Res, response: string): Promise<Res> {
  return b.post('/account/security/passkeys', {
    ...formFields(page.body, '/account/security/passkeys'),
    name: 'Soft key',
    response,
  });
}

let aliceKey: SoftAuthenticator;
let daveKey: SoftAuthenticator;

describe('passkey registration', () => {
  it('refuses an answer without user verification, from another origin, or for another challenge', async () => {
    aliceKey = new SoftAuthenticator(server.issuer);
    const b = new Browser(server.url);
    let page = await accountPage(b, ALICE, ALICE_SECRET);
    const tries: Array<[string, Parameters<SoftAuthenticator['register']>[1]]> = [
      ['no user verification', { userVerified: false }],
      ['other origin', { origin: 'https://evil.example' }],
      ['other relying party ID', { rpId: 'evil.example' }],
      ['other challenge', { challenge: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }],
    ];
    for (const [what, knobs] of tries) {
      const r = await register(b, page, aliceKey.register(pageOptions(page.body), knobs));
      expect(r.location, what).toContain('done=passkey_failed');
      // The challenge was spent by the failed answer: a good answer to it is refused too.
      const retry = await register(b, page, aliceKey.register(pageOptions(page.body)));
      expect(retry.location, what).toContain('done=passkey_failed');
      page = await b.get('/account/security');
    }
    expect(await readEvents(server, "WHERE type = 'mfa.enrolled' AND data LIKE '%passkey%'")).toEqual([]);
    const ok = await register(b, page, aliceKey.register(pageOptions(page.body)));
    expect(ok.location).toBe('/account/security?done=passkey');
    // The challenge was used: the same answer again is refused.
    const again = await register(b, await b.get('/account/security'), aliceKey.register(pageOptions(page.body)));
    expect(again.location).toContain('done=passkey_failed');

    daveKey = new SoftAuthenticator(server.issuer);
    const d = new Browser(server.url);
    const davePage = await accountPage(d, DAVE, DAVE_SECRET);
    expect((await register(d, davePage, daveKey.register(pageOptions(davePage.body)))).status).toBe(303);
  });
});

describe('passkey at the second step', () => {
  /** A fresh password-only session on the factor step, with its passkey form. */
  async function factorStep(user = ALICE): Promise<{ b: Browser; page: Res }> {
    const b = new Browser(server.url);
    const page = await password(b, user);
    expect(page.body).toContain('id="passkey-form"');
    return { b, page };
  }
  const post = (b: Browser, page: Res, response: string) =>
    b.post('/mfa/passkey', { ...formFields(page.body, '/mfa/passkey'), response });

  it('a good assertion passes; replaying it in another session is refused (single-use challenge)', async () => {
    const first = await factorStep();
    const answer = aliceKey.assert(pageOptions(first.page.body));
    const ok = await post(first.b, first.page, answer);
    expect(ok.status, ok.body.slice(0, 300)).toBe(303);
    const second = await factorStep();
    const replay = await post(second.b, second.page, answer);
    expect(replay.status).toBe(401);
  });

  it('refuses no user verification, another origin or RP ID, and a counter that did not grow (cloned authenticator)', async () => {
    const cases: Array<[string, Parameters<SoftAuthenticator['assert']>[1]]> = [
      ['no user verification', { userVerified: false }],
      ['other origin', { origin: 'https://evil.example' }],
      ['other relying party ID', { rpId: 'evil.example' }],
      ['counter did not grow', { counter: aliceKey.counter }],
    ];
    for (const [what, knobs] of cases) {
      const { b, page } = await factorStep();
      const r = await post(b, page, aliceKey.assert(pageOptions(page.body), knobs));
      expect(r.status, what).toBe(401);
      expect(r.body, what).toContain('could not be verified');
    }
    const { b, page } = await factorStep();
    expect((await post(b, page, aliceKey.assert(pageOptions(page.body)))).status).toBe(303);
    const failed = await readEvents(server, "WHERE type = 'mfa.failed'");
    expect(failed.filter((e) => e.data.factor === 'passkey' && e.data.reason === 'invalid_response').length).toBe(5);
  });

  it("refuses another user's passkey", async () => {
    const { b, page } = await factorStep(DAVE);
    const r = await post(b, page, aliceKey.assert(pageOptions(page.body)));
    expect(r.status).toBe(401);
    // Dave's own passkey on a fresh challenge passes.
    const fresh = await b.get(page.url);
    const ok = await post(b, fresh, daveKey.assert(pageOptions(fresh.body)));
    expect(ok.status, ok.body.slice(0, 300)).toBe(303);
  });
});
