/**
 * One real browser through the whole sign-in: Debian's Chromium driven by Playwright, from the client's
 * authorization request through the login and consent pages to the client's redirect, then the code exchanged by
 * openid-client. The browser enforces what the HTTP-level tests can only read: the CSP (no inline script or style
 * is refused, so the pages must work without), cookies, form posts and redirects.
 *
 * The page screenshots come from browser-pages.test.ts; this file adds the signed-out page
 * (PORTCULLIS_SCREENSHOTS=DIR, npm run docs:screenshots).
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as client from 'openid-client';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHROMIUM, launchChromium } from './helpers/chromium.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, signInConfig } from './helpers/signin.ts';

const { existsSync } = await import('node:fs');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium)
  console.warn(`\n*** SKIPPED: real-browser tests need Chromium at ${CHROMIUM} (apt-get install -y chromium) ***\n`);

let server: RunningServer;
let app: Server;
let callbackUrl: string;
let context: BrowserContext;
let profileDir: string;
const shotsDir = process.env.PORTCULLIS_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'portcullis-shots-'));
const cspViolations: string[] = [];
const consoleErrors: string[] = [];

beforeAll(async () => {
  if (!haveChromium) return;
  // The relying party's own web server: the browser must really arrive at the client's redirect_uri.
  app = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Example app</title><p>Signed in; the app now exchanges the code.</p>');
    req.resume();
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  callbackUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}/callback`;
  const c = signInConfig();
  const clients = c.config.clients as Array<Record<string, unknown>>;
  clients.push({
    client_id: 'spa',
    client_name: 'Example Orders App',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    redirect_uris: [callbackUrl],
    post_logout_redirect_uris: [`${callbackUrl}?signed-out`],
    scope: 'openid profile email offline_access orders:read orders:write',
  });
  server = await startServer(c.config);
  profileDir = mkdtempSync(join(tmpdir(), 'pw-'));
  mkdirSync(shotsDir, { recursive: true });
  context = await launchChromium(profileDir, 900);
  // Script errors and refused subresources. Documents answered 4xx on purpose (wrong password, error page) are
  // logged by Chromium as "Failed to load resource": those are checked through the response, not here.
  context.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  context.on('response', (r) => {
    const type = r.request().resourceType();
    if (type !== 'document' && r.status() >= 400 && !r.url().endsWith('/favicon.ico'))
      consoleErrors.push(`${r.status()} ${r.url()}`);
  });
}, 60_000);

afterAll(async () => {
  await context?.close();
  await server?.close();
  await new Promise((r) => (app ? app.close(r) : r(undefined)));
  if (profileDir) rmSync(profileDir, { recursive: true, force: true });
  if (!process.env.PORTCULLIS_SCREENSHOTS) rmSync(shotsDir, { recursive: true, force: true });
});

/** Records CSP violations the page reports (the browser also logs them as console errors). */
async function watchCsp(page: Page): Promise<void> {
  await page.exposeFunction('__cspViolation', (v: string) => cspViolations.push(v));
  // Runs in the page (a string: this file is compiled without the DOM library).
  await page.addInitScript({
    content:
      "document.addEventListener('securitypolicyviolation', (e) => window.__cspViolation(e.violatedDirective + ' ' + e.blockedURI));",
  });
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(shotsDir, `${name}.png`), fullPage: true });
}

describe.skipIf(!haveChromium)('a real browser signs in through login and consent to the client', () => {
  it('code + PKCE end to end, with the CSP enforced and no console errors', async () => {
    const config = await client.discovery(new URL(server.issuer), 'spa', undefined, client.None(), {
      execute: [client.allowInsecureRequests],
    });
    const verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const authUrl = client.buildAuthorizationUrl(config, {
      redirect_uri: callbackUrl,
      scope: 'openid profile email offline_access orders:read',
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });

    const page = await context.newPage();
    await watchCsp(page);
    const first = await page.goto(authUrl.href);
    expect(first?.status()).toBe(200);
    // Redirected to the login page on this server.
    expect(new URL(page.url()).pathname).toBe('/login');
    const headers = first!.headers();
    expect(headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
    expect(headers['content-security-policy']).not.toMatch(/unsafe-inline/);
    expect(headers['x-frame-options']).toBe('DENY');
    expect(await page.getByLabel(/username/i).isVisible()).toBe(true);

    // A wrong password first: the page says so, politely, and keeps the username.
    await page.getByLabel(/username/i).fill(ALICE.username);
    await page.getByLabel(/password/i).fill('not the password');
    await Promise.all([page.waitForLoadState('load'), page.getByRole('button', { name: /sign in/i }).click()]);
    expect(await page.locator('[role="alert"], .error').first().textContent()).toBeTruthy();

    await page.getByLabel(/password/i).fill(ALICE.password);
    await Promise.all([
      page.waitForURL(/\/authorize|\/consent/),
      page.getByRole('button', { name: /sign in/i }).click(),
    ]);
    // The consent page names the client, each scope with its description, and the resource.
    // biome-ignore lint/performance/useDomNodeTextContent: what the user sees rendered is the point
    const consentText = await page.locator('main').innerText();
    expect(consentText).toContain('Example Orders App');
    expect(consentText).toContain('Read your orders');
    expect(consentText).toContain('https://api.example.com');

    await Promise.all([
      page.waitForURL((u) => u.href.startsWith(callbackUrl)),
      page.getByRole('button', { name: /allow/i }).click(),
    ]);
    const arrived = new URL(page.url());
    expect(arrived.searchParams.get('state')).toBe(state);
    expect(arrived.searchParams.get('iss')).toBe(server.issuer);
    const tokens = await client.authorizationCodeGrant(config, arrived, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    const id = tokens.claims()!;
    expect(id.amr).toEqual(['pwd']);

    // The connected-apps page lists the consent just given.
    await page.goto(`${server.url}/account/consents`);
    // biome-ignore lint/performance/useDomNodeTextContent: what the user sees rendered is the point
    expect(await page.locator('main').innerText()).toContain('Example Orders App');

    // Logout without an ID token hint asks the user to confirm.
    await page.goto(`${server.url}/logout`);
    expect(await page.getByRole('button', { name: /sign out/i }).count()).toBe(1);

    // RP-initiated logout with the ID token of this session: no question, back to the registered URI.
    const logoutUrl = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token!,
      post_logout_redirect_uri: `${callbackUrl}?signed-out`,
    });
    await page.goto(logoutUrl.href);
    expect(page.url().startsWith(`${callbackUrl}?signed-out`)).toBe(true);
    await page.goto(`${server.url}/logout`);
    await shot(page, 'signed-out');

    // Signed out server-side: the next authorization request asks for the password again.
    await page.goto(authUrl.href);
    expect(new URL(page.url()).pathname).toBe('/login');

    // An unregistered redirect_uri gets an error page on this server, never a redirect.
    const bad = new URL(authUrl);
    bad.searchParams.set('redirect_uri', 'https://evil.example/cb');
    const err = await page.goto(bad.href);
    expect(err?.status()).toBe(400);
    expect(new URL(page.url()).origin).toBe(new URL(server.url).origin);

    expect(cspViolations).toEqual([]);
    expect(consoleErrors).toEqual([]);
    await page.close();
  }, 60_000);

  it('the pages cannot be framed (frame-ancestors and X-Frame-Options are enforced by the browser)', async () => {
    const page = await context.newPage();
    // setContent waits for the load event, which waits for the iframe.
    await page.setContent(`<iframe id="f" src="${server.url}/login"></iframe>`, { waitUntil: 'load' });
    const frames = page.frames().filter((f) => f !== page.mainFrame());
    expect(frames).toHaveLength(1);
    // Chromium replaces a refused frame with an error document: no login form inside.
    expect(await frames[0]!.locator('input[name="password"]').count()).toBe(0);
    await page.close();
  });
});
