/**
 * Passkeys in a real browser: Debian's Chromium through playwright-core with Chromium's virtual authenticator
 * (CDP WebAuthn domain: ctap2, internal transport, resident keys, user verification). Alice signs in with her
 * password and TOTP, is told a passkey is needed for orders:write, adds one on the account page (the page's script
 * calls navigator.credentials.create), continues to the client; then, with a fresh cookie jar, signs in again with
 * the passkey (navigator.credentials.get) and gets tokens with acr "3" and amr hwk. Pages run under their CSP
 * (script-src 'self' only where the passkey script is needed). With PORTCULLIS_SCREENSHOTS=DIR it saves the factor
 * step, the account page and the TOTP enrolment page.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, launchChromium } from './helpers/chromium.ts';
import { readEvents } from './helpers/db.ts';
import { claimsOf, postForm } from './helpers/oauth.ts';
import { REPO_ROOT, type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, authorizeUrl, BOB, signInConfig, WEB_CB } from './helpers/signin.ts';
import { serverNow, totpCode } from './helpers/totp.ts';

const available = existsSync(CHROMIUM);
if (!available)
  console.warn(`\n*** SKIPPING browser-passkey.test.ts: ${CHROMIUM} is missing (apt-get install -y chromium) ***\n`);
const shotsDir = process.env.PORTCULLIS_SCREENSHOTS
  ? resolve(REPO_ROOT, process.env.PORTCULLIS_SCREENSHOTS)
  : undefined;
const ALICE_SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP';

let server: RunningServer;
let context: BrowserContext;
let profile: string;
const cspViolations: string[] = [];

async function shot(page: Page, name: string): Promise<void> {
  if (!shotsDir) return;
  mkdirSync(shotsDir, { recursive: true });
  await page.screenshot({ path: join(shotsDir, `${name}.png`), fullPage: true });
}

function watch(page: Page): void {
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text());
  });
}

async function captureClientRedirects(page: Page): Promise<string[]> {
  const landed: string[] = [];
  await page.route('https://app.example.com/**', async (route) => {
    landed.push(route.request().url());
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>client</title>ok' });
  });
  return landed;
}

/** Chromium's virtual authenticator on this page (W3C WebAuthn §11.3 virtual authenticators, via CDP). */
async function addVirtualAuthenticator(page: Page): Promise<void> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
}

async function redeem(code: string, verifier: string) {
  const r = await postForm(`${server.url}/token`, {
    grant_type: 'authorization_code',
    client_id: 'web',
    code,
    code_verifier: verifier,
    redirect_uri: WEB_CB,
  });
  expect(r.status, r.text).toBe(200);
  return r.json as { id_token: string; access_token: string };
}

const d = available ? describe : describe.skip;
d('real browser: passkeys with a virtual authenticator', () => {
  beforeAll(async () => {
    const { config } = signInConfig();
    (config.users as Array<Record<string, unknown>>)[0]!.totp_secret = ALICE_SECRET;
    config.mfa = { phishing_resistant_scopes: ['orders:write'] };
    // WebAuthn needs a domain as relying party ID (not 127.0.0.1); http://localhost is a secure context.
    server = await startServer(config, { issuerHost: 'localhost' });
    profile = mkdtempSync(join(tmpdir(), 'pw-'));
    context = await launchChromium(profile);
  }, 60_000);
  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await server?.close();
  });

  it('enrols a passkey on the account page, then signs in with it: acr "3", amr hwk', async () => {
    const page = await context.newPage();
    watch(page);
    await addVirtualAuthenticator(page);
    const landed = await captureClientRedirects(page);
    const first = authorizeUrl({ scope: 'openid orders:write' });
    await page.goto(server.issuer + first.url);
    await page.getByLabel('Username').fill(ALICE.username);
    await page.getByLabel('Password').fill(ALICE.password);
    await page.getByRole('button', { name: 'Sign in' }).click();

    // The factor step: a code from the app (computed from the server's clock).
    await page.getByLabel('Code from your authenticator app').waitFor();
    await shot(page, 'mfa');
    await page.getByLabel('Code from your authenticator app').fill(totpCode(ALICE_SECRET, await serverNow(server)));
    await page.getByRole('button', { name: 'Verify' }).click();

    // orders:write needs a passkey: alice has none yet, so she adds one.
    await page.getByText('needs a passkey').waitFor();
    await page.getByRole('link', { name: 'Add one' }).click();
    await page.getByRole('heading', { name: 'Sign-in security' }).waitFor();
    await page.getByLabel('Name for a new passkey').fill('Test laptop');
    await shot(page, 'account-security');
    await page.getByRole('button', { name: 'Add a passkey' }).click();

    // Registration upgraded the session (user verification on a passkey): on to consent and the client.
    await page.getByRole('button', { name: 'Allow' }).waitFor({ timeout: 15_000 });
    await page.getByRole('button', { name: 'Allow' }).click();
    await expect.poll(() => landed.length, { timeout: 10_000 }).toBe(1);
    await page.waitForURL(/^https:\/\/app\.example\.com\//); // the client page finished loading
    const code1 = new URL(landed[0]!).searchParams.get('code')!;
    const t1 = await redeem(code1, first.verifier);
    expect(claimsOf(t1.id_token).acr).toBe('3');

    const enrolled = await readEvents(server, "WHERE type = 'mfa.enrolled'");
    expect(enrolled.some((e) => e.data.factor === 'passkey' && e.data.name === 'Test laptop')).toBe(true);

    // The account page lists it by name.
    await page.goto(`${server.issuer}/account/security`);
    await expect.poll(() => page.getByText('Test laptop').count()).toBe(1);
    await shot(page, 'account-security-passkey');

    // A new cookie jar: sign in again, this time the second step is the passkey.
    await context.clearCookies();
    const second = authorizeUrl({ scope: 'openid orders:write' });
    await page.goto(server.issuer + second.url);
    await page.getByLabel('Username').fill(ALICE.username);
    await page.getByLabel('Password').fill(ALICE.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Use a passkey' }).click();
    await expect.poll(() => landed.length, { timeout: 15_000 }).toBe(2);
    const u = new URL(landed[1]!);
    expect(u.searchParams.get('state')).toBe('st-123');
    const t2 = await redeem(u.searchParams.get('code')!, second.verifier);
    const id = claimsOf(t2.id_token);
    expect(id.acr).toBe('3');
    expect(id.amr).toEqual(['pwd', 'hwk', 'user', 'mfa']);
    expect(claimsOf(t2.access_token).acr).toBe('3');
    // The signature counter moved forward and last use was recorded.
    const rows = await (await import('./helpers/db.ts')).query<{ counter: number; last_used_at: number | null }>(
      server,
      'SELECT counter, last_used_at FROM webauthn_credentials',
    );
    expect(rows).toHaveLength(1);
    expect(Number(rows[0]!.last_used_at)).toBeGreaterThan(0);
    expect(cspViolations).toEqual([]);
  }, 60_000);

  it('the TOTP enrolment page shows a server-rendered QR code under its CSP', async () => {
    const page = await context.newPage();
    watch(page);
    await context.clearCookies();
    await page.goto(`${server.issuer}/login?return_to=${encodeURIComponent('/account/security/totp')}`);
    await page.getByLabel('Username').fill(BOB.username);
    await page.getByLabel('Password').fill(BOB.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    const img = page.getByRole('img', { name: 'QR code for your authenticator app' });
    await img.waitFor();
    await expect
      .poll(() => img.evaluate((el) => (el as unknown as { naturalWidth: number }).naturalWidth))
      .toBeGreaterThan(0);
    await shot(page, 'totp-enrol');
    expect(cspViolations).toEqual([]);
  }, 30_000);
});
