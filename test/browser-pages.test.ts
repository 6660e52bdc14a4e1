/**
 * One real browser (Debian's Chromium through playwright-core) through sign-in and consent to the client's
 * redirect: proves the pages work under their own CSP (no inline script or style, form-action allowing the redirect
 * chain), the cookie attributes a browser actually stores, and the 303s. With PORTCULLIS_SCREENSHOTS=DIR it also
 * saves a screenshot of each page there (`npm run docs:screenshots` refreshes docs/screenshots).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, launchChromium } from './helpers/chromium.ts';
import { REPO_ROOT, type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, authorizeUrl, signInConfig, WEB_CB } from './helpers/signin.ts';

const available = existsSync(CHROMIUM);
if (!available)
  console.warn(`\n*** SKIPPING browser.test.ts: ${CHROMIUM} is missing (apt-get install -y chromium) ***\n`);
const shotsDir = process.env.PORTCULLIS_SCREENSHOTS
  ? resolve(REPO_ROOT, process.env.PORTCULLIS_SCREENSHOTS)
  : undefined;

let server: RunningServer;
let context: BrowserContext;
let profile: string;
const cspViolations: string[] = [];

async function shot(page: Page, name: string): Promise<void> {
  if (!shotsDir) return;
  mkdirSync(shotsDir, { recursive: true });
  await page.screenshot({ path: join(shotsDir, `${name}.png`), fullPage: true });
}

/** The client's redirect_uri is not a real site: answer it inside the browser and record where we landed. */
async function captureClientRedirects(page: Page): Promise<string[]> {
  const landed: string[] = [];
  await page.route('https://app.example.com/**', async (route) => {
    landed.push(route.request().url());
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>client</title>ok' });
  });
  return landed;
}

function watch(page: Page): void {
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text());
  });
}

const d = available ? describe : describe.skip;
d('real browser: sign-in and consent', () => {
  beforeAll(async () => {
    const { config } = signInConfig();
    (config.clients as unknown[]).push({
      client_id: 'tv',
      client_name: 'Living-room TV',
      token_endpoint_auth_method: 'none',
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
      scope: 'openid orders:read',
    });
    server = await startServer(config);
    profile = mkdtempSync(join(tmpdir(), 'pw-'));
    context = await launchChromium(profile);
  }, 60_000);
  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await server?.close();
  });

  it('signs in, consents and lands on the client with code, state and iss; no CSP violation', async () => {
    const page = await context.newPage();
    watch(page);
    const landed = await captureClientRedirects(page);
    await page.goto(server.url + authorizeUrl({ scope: 'openid profile orders:read' }).url);
    await expect.poll(() => page.url(), { timeout: 10_000 }).toMatch(/\/login\?return_to=/);
    expect(await page.title()).toBe('Sign in · Example Sign-in');
    // The stylesheet applied (a style from the file, not inline).
    const bg = await page.evaluate('getComputedStyle(document.querySelector("button.primary")).backgroundColor');
    expect(bg).toBe('rgb(11, 83, 148)');
    await shot(page, 'login');

    await page.getByLabel('Username').fill(ALICE.username);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect
      .poll(() => page.getByRole('alert').textContent(), { timeout: 10_000 })
      .toBe('Wrong username or password.');
    await shot(page, 'login-error');

    await page.getByLabel('Password').fill(ALICE.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('button', { name: 'Allow' }).waitFor();
    expect(await page.textContent('h1')).toContain('Example <Web> App');
    await shot(page, 'consent');

    const cookies = await context.cookies(server.url);
    expect(cookies).toHaveLength(1);
    expect(cookies[0]).toMatchObject({ name: 'portcullis', httpOnly: true, sameSite: 'Lax', path: '/' });

    await page.getByRole('button', { name: 'Allow' }).click();
    await expect.poll(() => landed.length, { timeout: 10_000 }).toBe(1);
    const u = new URL(landed[0]!);
    expect(`${u.origin}${u.pathname}`).toBe(WEB_CB);
    expect(u.searchParams.get('code')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(u.searchParams.get('state')).toBe('st-123');
    expect(u.searchParams.get('iss')).toBe(server.issuer);
    expect(cspViolations).toEqual([]);
    await page.close();
  });

  it('account, device, logout and error pages render under the same policy', async () => {
    const page = await context.newPage();
    watch(page);
    const landed = await captureClientRedirects(page);
    await page.goto(`${server.url}/account/consents`);
    await page.getByRole('heading', { name: 'Connected apps' }).waitFor();
    await shot(page, 'connected-apps');

    const r = await fetch(`${server.url}/device_authorization`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: 'tv', scope: 'openid orders:read' }),
    });
    const device = (await r.json()) as { verification_uri_complete: string };
    await page.goto(device.verification_uri_complete);
    await page.getByLabel('Code').waitFor();
    await shot(page, 'device-code');
    await page.getByRole('button', { name: 'Continue' }).click();
    await page.getByRole('button', { name: 'Allow' }).waitFor();
    await shot(page, 'device-confirm');
    await page.getByRole('button', { name: 'Allow' }).click();
    await page.getByRole('heading', { name: 'Device connected' }).waitFor();
    await shot(page, 'device-done');

    await page.goto(server.url + authorizeUrl({ redirect_uri: 'https://app.example.com/other' }).url);
    await page.getByRole('heading', { name: 'Something went wrong' }).waitFor();
    await shot(page, 'error');

    await page.goto(
      `${server.url}/logout?${new URLSearchParams({ client_id: 'web', post_logout_redirect_uri: 'https://app.example.com/bye', state: 'x' })}`,
    );
    await page.getByRole('button', { name: 'Sign out' }).waitFor();
    await shot(page, 'logout');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await expect.poll(() => landed.length, { timeout: 10_000 }).toBe(1);
    await page.waitForURL(/^https:\/\/app\.example\.com\//); // the client page finished loading
    expect(landed[0]).toBe('https://app.example.com/bye?state=x');
    expect(await context.cookies(server.url)).toEqual([]);

    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${server.url}/login`);
    await page.getByLabel('Username').waitFor();
    await shot(page, 'login-mobile');
    expect(cspViolations).toEqual([]);
    await page.close();
  });
});
