/** Shared set-up for the sign-in suites: a config with people, browser clients, and a scripted sign-in. */
import { expect } from 'vitest';
import { type Browser, formFields, pkce, queryOf, type Res } from './browser.ts';
import { secret } from './oauth.ts';
import type { ConfigObject } from './server.ts';

export const API = 'https://api.example.com';
export const WEB_CB = 'https://app.example.com/cb';
export const PAR_CB = 'https://par.example.com/cb';
export const ALICE = { username: 'alice', password: 'correct horse battery staple' };
export const BOB = { username: 'bob', password: 'another long passphrase' };

export function signInConfig(): { config: ConfigObject; parSecret: string; svcSecret: string } {
  const parSecret = secret();
  const svcSecret = secret();
  const config: ConfigObject = {
    branding: { name: 'Example Sign-in', primary_color: '#0b5394' },
    resources: [
      {
        identifier: API,
        name: 'Orders API',
        scopes: ['orders:read', 'orders:write'],
        scope_descriptions: { 'orders:read': 'Read your orders', 'orders:write': 'Place orders for you' },
      },
    ],
    users: [
      { ...ALICE, email: 'alice@example.com', name: 'Alice Example' },
      { ...BOB, name: 'Bob' },
    ],
    clients: [
      {
        client_id: 'web',
        client_name: 'Example <Web> App',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        redirect_uris: [WEB_CB, 'http://127.0.0.1/native', 'https://app.example.com/cb2?x=1', 'com.example.app:/oauth'],
        post_logout_redirect_uris: ['https://app.example.com/bye'],
        scope: 'openid profile email orders:read orders:write',
      },
      {
        client_id: 'par-only',
        client_name: 'PAR client',
        client_secret: parSecret,
        grant_types: ['authorization_code'],
        redirect_uris: [PAR_CB],
        scope: 'openid orders:read',
        require_pushed_authorization_requests: true,
      },
      {
        client_id: 'svc',
        client_secret: svcSecret,
        grant_types: ['client_credentials'],
        redirect_uris: ['https://svc.example.com/cb'],
        scope: 'orders:read',
      },
    ],
  };
  return { config, parSecret, svcSecret };
}

export function authorizeUrl(over: Record<string, string | undefined> = {}): { url: string; verifier: string } {
  const { verifier, challenge } = pkce();
  const p: Record<string, string> = {};
  const all: Record<string, string | undefined> = {
    response_type: 'code',
    client_id: 'web',
    redirect_uri: WEB_CB,
    scope: 'openid orders:read',
    state: 'st-123',
    nonce: 'n-456',
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...over,
  };
  for (const [k, v] of Object.entries(all)) if (v !== undefined) p[k] = v;
  return { url: `/authorize?${new URLSearchParams(p)}`, verifier };
}

/** From a /login redirect (or page), signs in; returns the response after following back to this server. */
export async function signInFrom(b: Browser, res: Res, user = ALICE): Promise<Res> {
  const login = await b.follow(res);
  expect(login.status, login.body.slice(0, 500)).toBe(200);
  const fields = formFields(login.body, '/login');
  const posted = await b.post('/login', { ...fields, username: user.username, password: user.password });
  expect(posted.status, posted.body.slice(0, 500)).toBe(303);
  return b.follow(posted);
}

/** On a consent page, approves; returns the redirect to the client. */
export async function approve(b: Browser, consent: Res, decision = 'approve'): Promise<Res> {
  expect(consent.status, consent.body.slice(0, 500)).toBe(200);
  const fields = formFields(consent.body, '/consent');
  return b.post('/consent', { ...fields, decision });
}

/** The whole interactive flow from an authorize URL to the client's redirect: sign in, approve if asked. */
export async function codeFlow(b: Browser, url: string, user = ALICE): Promise<Record<string, string>> {
  let r = await b.follow(await b.get(url));
  if (r.status === 200 && r.body.includes('action="/login"')) r = await signInFrom(b, r, user);
  if (r.status === 200 && r.body.includes('action="/consent"')) r = await approve(b, r);
  expect(r.status, r.body.slice(0, 500)).toBe(303);
  return queryOf(r.location);
}
