/**
 * DPoP at the token endpoint (RFC 9449), black-box: oauth4webapi is the real client (client_credentials, code flow
 * and refresh, its nonce handling), plus hand-made proofs for every check the server makes.
 */
import { randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import * as oauth from 'oauth4webapi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, formFields, queryOf } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { basicAuth, type HttpResult, postForm, secret } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, authorizeUrl, codeFlow, PAR_CB, signInConfig, signInFrom, WEB_CB } from './helpers/signin.ts';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const insecure = { [oauth.allowInsecureRequests]: true } as const;

let server: RunningServer;
/** A second server that requires nonces (dpop.require_nonce). */
let nonceServer: RunningServer;
/** Both servers share the client secrets. */
const svcSecret = secret();
const boundSecret = secret();
const parSecret = secret();

function config(extra: Record<string, unknown> = {}) {
  const c = signInConfig();
  const clients = c.config.clients as Array<Record<string, unknown>>;
  (clients.find((x) => x.client_id === 'svc') as Record<string, unknown>).client_secret = svcSecret;
  (clients.find((x) => x.client_id === 'par-only') as Record<string, unknown>).client_secret = parSecret;
  clients.push(
    {
      client_id: 'bound-svc',
      client_secret: boundSecret,
      grant_types: ['client_credentials'],
      scope: 'orders:read',
      dpop_bound_access_tokens: true,
    },
    {
      client_id: 'tv',
      token_endpoint_auth_method: 'none',
      grant_types: [DEVICE_GRANT, 'refresh_token'],
      scope: 'orders:read',
    },
  );
  Object.assign(c.config, extra);
  return c.config;
}

beforeAll(async () => {
  [server, nonceServer] = await Promise.all([
    startServer(config()),
    startServer(config({ dpop: { require_nonce: true, nonce_rotation: '60s' } })),
  ]);
});
afterAll(async () => {
  await Promise.all([server?.close(), nonceServer?.close()]);
});

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

async function keyPair(alg = 'ES256'): Promise<KeyPair> {
  return generateKeyPair(alg, { extractable: true });
}

async function thumbprint(k: KeyPair): Promise<string> {
  return calculateJwkThumbprint(await exportJWK(k.publicKey), 'sha256');
}

/** The server's clock (it may have been moved forward), in seconds. */
async function serverNow(s: RunningServer): Promise<number> {
  return Math.floor((await s.advanceClock(0)).now_ms / 1000);
}

interface ProofOptions {
  claims?: Record<string, unknown>;
  header?: Record<string, unknown>;
  jwk?: JWK;
  alg?: string;
  s?: RunningServer;
}

/** A DPoP proof for POST /token, valid unless `over` changes something. */
async function proof(k: KeyPair, over: ProofOptions = {}): Promise<string> {
  const s = over.s ?? server;
  const jwk = over.jwk ?? (await exportJWK(k.publicKey));
  return new SignJWT({
    htm: 'POST',
    htu: `${s.issuer}/token`,
    jti: randomUUID(),
    iat: await serverNow(s),
    ...over.claims,
  })
    .setProtectedHeader({ alg: over.alg ?? 'ES256', typ: 'dpop+jwt', jwk, ...over.header })
    .sign(k.privateKey);
}

function ccToken(
  dpop: string | undefined,
  s = server,
  clientId = 'svc',
  clientSecret = svcSecret,
): Promise<HttpResult> {
  return postForm(
    `${s.url}/token`,
    { grant_type: 'client_credentials' },
    { basic: [clientId, clientSecret], headers: dpop === undefined ? {} : { dpop } },
  );
}

function expectDpopError(r: HttpResult, description: RegExp): void {
  expect(r.status, r.text).toBe(400);
  expect(r.json?.error).toBe('invalid_dpop_proof');
  expect(r.json?.error_description).toMatch(description);
}

async function discover(s: RunningServer): Promise<oauth.AuthorizationServer> {
  const issuer = new URL(s.issuer);
  return oauth.processDiscoveryResponse(
    issuer,
    await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
  );
}

/** Runs a token request with oauth4webapi, retrying once when the server asks for a nonce (RFC 9449 §8). */
async function withNonceRetry<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (e) {
    if (oauth.isDPoPNonceError(e)) return run();
    throw e;
  }
}

describe('oauth4webapi as the client', () => {
  let as: oauth.AuthorizationServer;
  beforeAll(async () => {
    as = await discover(server);
  });

  it('discovery advertises dpop_signing_alg_values_supported (asymmetric only)', () => {
    const algs = as.dpop_signing_alg_values_supported as string[];
    expect(algs).toContain('ES256');
    expect(algs).toContain('EdDSA');
    expect(algs.some((a) => a === 'none' || a.startsWith('HS'))).toBe(false);
  });

  it('client_credentials with a proof: a DPoP token with cnf.jkt; introspection shows cnf and token_type', async () => {
    const k = await keyPair();
    const client: oauth.Client = { client_id: 'svc' };
    const DPoP = oauth.DPoP(client, k);
    const res = await oauth.processClientCredentialsResponse(
      as,
      client,
      await oauth.clientCredentialsGrantRequest(
        as,
        client,
        oauth.ClientSecretBasic(svcSecret),
        {},
        { DPoP, ...insecure },
      ),
    );
    expect(res.token_type).toBe('dpop');
    const claims = decodeJwt(res.access_token);
    expect(claims.cnf).toEqual({ jkt: await thumbprint(k) });
    const intro = await postForm(
      `${server.url}/introspect`,
      { token: res.access_token },
      { headers: { authorization: basicAuth('svc', svcSecret) } },
    );
    expect(intro.json).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: await thumbprint(k) } });
    const issued = await readEvents(server, 'WHERE type = ? AND jti = ?', ['token.issued', claims.jti]);
    expect(issued[0]?.data.jkt).toBe(await thumbprint(k));
  });

  it('without a proof the same client still gets a Bearer token with no cnf', async () => {
    const r = await ccToken(undefined);
    expect(r.status, r.text).toBe(200);
    expect(r.json?.token_type).toBe('Bearer');
    expect(decodeJwt(r.json?.access_token as string).cnf).toBeUndefined();
  });

  it('code flow and refresh for a public client: both bound; the refresh needs a proof with the same key', async () => {
    const k = await keyPair();
    const client: oauth.Client = { client_id: 'web' };
    const DPoP = oauth.DPoP(client, k);
    const { url, verifier } = authorizeUrl({ scope: 'orders:read' });
    const q = await codeFlow(new Browser(server.url), url);
    const params = oauth.validateAuthResponse(as, client, new URL(`${WEB_CB}?${new URLSearchParams(q)}`), 'st-123');
    const first = await oauth.processAuthorizationCodeResponse(
      as,
      client,
      await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, WEB_CB, verifier, {
        DPoP,
        ...insecure,
      }),
    );
    expect(first.token_type).toBe('dpop');
    expect(decodeJwt(first.access_token).cnf).toEqual({ jkt: await thumbprint(k) });
    expect(first.refresh_token).toBeTruthy();
    const rt = first.refresh_token as string;

    // No proof: refused (and the token still works afterwards).
    const bare = await postForm(`${server.url}/token`, {
      grant_type: 'refresh_token',
      client_id: 'web',
      refresh_token: rt,
    });
    expectDpopError(bare, /DPoP-bound/);
    // Another key: refused, without burning the family.
    const other = await keyPair();
    const wrong = await postForm(
      `${server.url}/token`,
      { grant_type: 'refresh_token', client_id: 'web', refresh_token: rt },
      { headers: { dpop: await proof(other) } },
    );
    expect(wrong.status, wrong.text).toBe(400);
    expect(wrong.json).toMatchObject({ error: 'invalid_grant' });
    expect(wrong.json?.error_description).toMatch(/another DPoP key/);

    // The right key: a new bound pair.
    const second = await oauth.processRefreshTokenResponse(
      as,
      client,
      await oauth.refreshTokenGrantRequest(as, client, oauth.None(), rt, { DPoP, ...insecure }),
    );
    expect(second.token_type).toBe('dpop');
    expect(decodeJwt(second.access_token).cnf).toEqual({ jkt: await thumbprint(k) });
    // The rotated refresh token is bound too.
    const wrong2 = await postForm(
      `${server.url}/token`,
      { grant_type: 'refresh_token', client_id: 'web', refresh_token: second.refresh_token as string },
      { headers: { dpop: await proof(other) } },
    );
    expect(wrong2.json?.error).toBe('invalid_grant');
  });

  it('/userinfo refuses a DPoP-bound token presented as a Bearer token (RFC 9449 §7.1)', async () => {
    const k = await keyPair();
    const { url, verifier } = authorizeUrl({ scope: 'openid orders:read' });
    const q = await codeFlow(new Browser(server.url), url);
    const form = {
      grant_type: 'authorization_code',
      client_id: 'web',
      code: q.code!,
      code_verifier: verifier,
      redirect_uri: WEB_CB,
    };
    const r = await postForm(`${server.url}/token`, form, { headers: { dpop: await proof(k) } });
    expect(r.status, r.text).toBe(200);
    const at = r.json?.access_token as string;
    expect(decodeJwt(at).aud).toContain(`${server.issuer}/userinfo`);
    const ui = await fetch(`${server.url}/userinfo`, { headers: { authorization: `Bearer ${at}` } });
    expect(ui.status).toBe(401);
    expect(ui.headers.get('www-authenticate')).toMatch(/invalid_token/);
    expect(((await ui.json()) as Record<string, string>).error_description).toMatch(/DPoP-bound/);
  });

  it('a public client that did not use DPoP gets an unbound refresh token (refreshes without a proof)', async () => {
    const { url, verifier } = authorizeUrl({ scope: 'orders:read' });
    const q = await codeFlow(new Browser(server.url), url);
    const r = await postForm(`${server.url}/token`, {
      grant_type: 'authorization_code',
      client_id: 'web',
      code: q.code!,
      code_verifier: verifier,
      redirect_uri: WEB_CB,
    });
    expect(r.json?.token_type).toBe('Bearer');
    const again = await postForm(`${server.url}/token`, {
      grant_type: 'refresh_token',
      client_id: 'web',
      refresh_token: r.json?.refresh_token as string,
    });
    expect(again.status, again.text).toBe(200);
  });

  it('device code: the polling device binds its tokens with its proof', async () => {
    const k = await keyPair('EdDSA');
    const auth = await postForm(`${server.url}/device_authorization`, { client_id: 'tv', scope: 'orders:read' });
    expect(auth.status, auth.text).toBe(200);
    const { device_code, user_code } = auth.json as { device_code: string; user_code: string };
    const b = new Browser(server.url);
    const start = await b.get('/device');
    const page = await signInFrom(b, start, ALICE);
    const entered = await b.post('/device', { ...formFields(page.body, '/device'), user_code });
    const confirm = await b.follow(entered);
    const done = await b.post('/device/confirm', {
      ...formFields(confirm.body, '/device/confirm'),
      decision: 'approve',
    });
    expect(done.status).toBe(303);
    const client: oauth.Client = { client_id: 'tv' };
    const res = await oauth.processDeviceCodeResponse(
      as,
      client,
      await oauth.deviceCodeGrantRequest(as, client, oauth.None(), device_code, {
        DPoP: oauth.DPoP(client, k),
        ...insecure,
      }),
    );
    expect(res.token_type).toBe('dpop');
    expect(decodeJwt(res.access_token).cnf).toEqual({ jkt: await thumbprint(k) });
    // Public client: its refresh token is bound to the EdDSA key.
    const bare = await postForm(`${server.url}/token`, {
      grant_type: 'refresh_token',
      client_id: 'tv',
      refresh_token: res.refresh_token as string,
    });
    expectDpopError(bare, /DPoP-bound/);
  });
});

describe('hand-made proofs: every check refuses', () => {
  let k: KeyPair;
  beforeAll(async () => {
    k = await keyPair();
  });

  it('a valid hand-made proof is accepted (the baseline the others differ from)', async () => {
    const r = await ccToken(await proof(k));
    expect(r.status, r.text).toBe(200);
    expect(r.json?.token_type).toBe('DPoP');
  });

  it('dpop_bound_access_tokens: such a client must send a proof (RFC 9449 §5.2)', async () => {
    expectDpopError(await ccToken(undefined, server, 'bound-svc', boundSecret), /must send a DPoP proof/);
    const ok = await ccToken(await proof(k), server, 'bound-svc', boundSecret);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json?.token_type).toBe('DPoP');
  });

  it('wrong htm', async () => {
    expectDpopError(await ccToken(await proof(k, { claims: { htm: 'GET' } })), /htm/);
  });

  it('wrong htu (another path; another host)', async () => {
    expectDpopError(await ccToken(await proof(k, { claims: { htu: `${server.issuer}/introspect` } })), /htu/);
    expectDpopError(await ccToken(await proof(k, { claims: { htu: 'https://evil.example.com/token' } })), /htu/);
  });

  it('htu is compared after normalisation, ignoring query and fragment (RFC 3986 §6)', async () => {
    const u = new URL(`${server.issuer}/token`);
    const htu = `${u.protocol}//${u.host.toUpperCase()}/./token?x=1#f`;
    const r = await ccToken(await proof(k, { claims: { htu } }));
    expect(r.status, r.text).toBe(200);
  });

  it('stale iat, and an iat in the future', async () => {
    const now = await serverNow(server);
    expectDpopError(await ccToken(await proof(k, { claims: { iat: now - 120 } })), /iat/);
    expectDpopError(await ccToken(await proof(k, { claims: { iat: now + 120 } })), /iat/);
  });

  it('a replayed jti', async () => {
    const p = await proof(k);
    expect((await ccToken(p)).status).toBe(200);
    expectDpopError(await ccToken(p), /already used/);
  });

  it('HS256 (symmetric) is refused by the algorithm allowlist', async () => {
    const key = new TextEncoder().encode('a shared secret that is long enough for hs256!!');
    const p = await new SignJWT({
      htm: 'POST',
      htu: `${server.issuer}/token`,
      jti: randomUUID(),
      iat: await serverNow(server),
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: await exportJWK(k.publicKey) })
      .sign(key);
    expectDpopError(await ccToken(p), /algorithm/);
  });

  it('alg none is refused, signed or not', async () => {
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const h = enc({ alg: 'none', typ: 'dpop+jwt', jwk: await exportJWK(k.publicKey) });
    const c = enc({ htm: 'POST', htu: `${server.issuer}/token`, jti: randomUUID(), iat: await serverNow(server) });
    expectDpopError(await ccToken(`${h}.${c}.`), /compact JWT/);
    expectDpopError(await ccToken(`${h}.${c}.AAAA`), /algorithm/);
  });

  it('a private key in the jwk header', async () => {
    const priv = await exportJWK(k.privateKey);
    expectDpopError(await ccToken(await proof(k, { jwk: priv })), /private key material/);
  });

  it('a symmetric jwk', async () => {
    expectDpopError(await ccToken(await proof(k, { jwk: { kty: 'oct', x: 'AAAA' } as JWK })), /public key/);
  });

  it('a signature by another key than the jwk header names', async () => {
    const other = await keyPair();
    expectDpopError(await ccToken(await proof(k, { jwk: await exportJWK(other.publicKey) })), /signature/);
  });

  it('wrong typ, and two DPoP headers', async () => {
    expectDpopError(await ccToken(await proof(k, { header: { typ: 'JWT' } })), /typ/);
    const r = await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials' },
      { basic: ['svc', svcSecret], headers: { dpop: `${await proof(k)}, ${await proof(k)}` } },
    );
    expectDpopError(r, /compact JWT/);
  });

  it('a refused proof is recorded as token.failed', async () => {
    await ccToken(await proof(k, { claims: { htm: 'PUT' } }));
    const failed = await readEvents(server, 'WHERE type = ? AND client_id = ?', ['token.failed', 'svc']);
    expect(failed.some((e) => e.data.error === 'invalid_dpop_proof')).toBe(true);
  });
});

describe('dpop_jkt: authorization codes bound to a DPoP key (RFC 9449 §10)', () => {
  /** Redeems a code of the web client; with a proof by `k` when given. */
  function redeem(code: string, verifier: string, k?: KeyPair, redirectUri = WEB_CB, clientId = 'web') {
    const form = { grant_type: 'authorization_code', client_id: clientId, code, code_verifier: verifier };
    return (async () =>
      postForm(
        `${server.url}/token`,
        { ...form, redirect_uri: redirectUri },
        {
          ...(clientId === 'par-only' ? { basic: ['par-only', parSecret] as [string, string] } : {}),
          headers: k ? { dpop: await proof(k) } : {},
        },
      ))();
  }

  it('/authorize with dpop_jkt: the code is redeemed only with a proof by that key (else invalid_grant, code kept)', async () => {
    const k = await keyPair();
    const other = await keyPair();
    const { url, verifier } = authorizeUrl({ scope: 'orders:read', dpop_jkt: await thumbprint(k) });
    const q = await codeFlow(new Browser(server.url), url);
    const code = q.code as string;

    const bare = await redeem(code, verifier);
    expect(bare.status, bare.text).toBe(400);
    expect(bare.json?.error).toBe('invalid_grant');
    expect(bare.json?.error_description).toMatch(/bound to a DPoP key/);
    const wrong = await redeem(code, verifier, other);
    expect(wrong.status, wrong.text).toBe(400);
    expect(wrong.json?.error).toBe('invalid_grant');
    expect(wrong.json?.error_description).toMatch(/another key/);

    // Neither attempt spent the code or revoked the grant: the key holder still redeems it.
    const ok = await redeem(code, verifier, k);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json?.token_type).toBe('DPoP');
    expect(decodeJwt(ok.json?.access_token as string).cnf).toEqual({ jkt: await thumbprint(k) });
    const failed = await readEvents(server, 'WHERE type = ? AND client_id = ?', ['token.failed', 'web']);
    expect(
      failed.filter((e) => /dpop_jkt|another key than the dpop_jkt/.test(String(e.data.description))),
    ).toHaveLength(2);
  });

  it('a malformed dpop_jkt is invalid_request (at /authorize, sent back to the client; at /par, JSON)', async () => {
    for (const bad of ['short', `${'A'.repeat(42)}=`, 'A'.repeat(44)]) {
      const b = new Browser(server.url);
      const r = await b.get(authorizeUrl({ scope: 'orders:read', dpop_jkt: bad }).url);
      expect(r.status, bad).toBe(303);
      expect(queryOf(r.location), bad).toMatchObject({ error: 'invalid_request', state: 'st-123' });
      expect(queryOf(r.location).error_description).toMatch(/dpop_jkt/);
      const par = await postForm(`${server.url}/par`, {
        client_id: 'web',
        response_type: 'code',
        redirect_uri: WEB_CB,
        scope: 'orders:read',
        code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
        code_challenge_method: 'S256',
        dpop_jkt: bad,
      });
      expect(par.status, bad).toBe(400);
      expect(par.json).toMatchObject({ error: 'invalid_request' });
    }
  });

  it('/par with dpop_jkt (confidential client): the code is bound the same way', async () => {
    const k = await keyPair();
    const other = await keyPair();
    const { url, verifier } = authorizeUrl({
      client_id: 'par-only',
      redirect_uri: PAR_CB,
      scope: 'orders:read',
      dpop_jkt: await thumbprint(k),
    });
    const params = Object.fromEntries(new URL(url, server.url).searchParams);
    const pushed = await postForm(`${server.url}/par`, params, { basic: ['par-only', parSecret] });
    expect(pushed.status, pushed.text).toBe(201);
    const q = await codeFlow(
      new Browser(server.url),
      `/authorize?client_id=par-only&request_uri=${encodeURIComponent(String(pushed.json?.request_uri))}`,
    );
    const code = q.code as string;
    const wrong = await redeem(code, verifier, other, PAR_CB, 'par-only');
    expect(wrong.json?.error, wrong.text).toBe('invalid_grant');
    const ok = await redeem(code, verifier, k, PAR_CB, 'par-only');
    expect(ok.status, ok.text).toBe(200);
    expect(decodeJwt(ok.json?.access_token as string).cnf).toEqual({ jkt: await thumbprint(k) });
  });

  it('/par with a DPoP proof (oauth4webapi): binds the code to the proof key; a proof by another key is refused', async () => {
    const as = await discover(server);
    const client: oauth.Client = { client_id: 'web' };
    const k = await keyPair();
    const verifier = oauth.generateRandomCodeVerifier();
    const pushed = await oauth.processPushedAuthorizationResponse(
      as,
      client,
      await oauth.pushedAuthorizationRequest(
        as,
        client,
        oauth.None(),
        {
          response_type: 'code',
          redirect_uri: WEB_CB,
          scope: 'orders:read',
          state: 'st-123',
          code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
          code_challenge_method: 'S256',
        },
        { DPoP: oauth.DPoP(client, k), ...insecure },
      ),
    );
    const q = await codeFlow(
      new Browser(server.url),
      `/authorize?client_id=web&request_uri=${encodeURIComponent(pushed.request_uri)}`,
    );
    const params = oauth.validateAuthResponse(as, client, new URL(`${WEB_CB}?${new URLSearchParams(q)}`), 'st-123');
    const otherKey = await keyPair();
    const refused = await oauth
      .authorizationCodeGrantRequest(as, client, oauth.None(), params, WEB_CB, verifier, {
        DPoP: oauth.DPoP(client, otherKey),
        ...insecure,
      })
      .then((r) => oauth.processAuthorizationCodeResponse(as, client, r))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(refused).toBeInstanceOf(oauth.ResponseBodyError);
    expect((refused as oauth.ResponseBodyError).error).toBe('invalid_grant');
    const tokens = await oauth.processAuthorizationCodeResponse(
      as,
      client,
      await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, WEB_CB, verifier, {
        DPoP: oauth.DPoP(client, k),
        ...insecure,
      }),
    );
    expect(tokens.token_type).toBe('dpop');
    expect(decodeJwt(tokens.access_token).cnf).toEqual({ jkt: await thumbprint(k) });
  });

  it('/par with a DPoP proof and a dpop_jkt naming another key is refused; an invalid proof too', async () => {
    const k = await keyPair();
    const other = await keyPair();
    const body = {
      client_id: 'web',
      response_type: 'code',
      redirect_uri: WEB_CB,
      scope: 'orders:read',
      code_challenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
      code_challenge_method: 'S256',
    };
    const parProof = (key: KeyPair, htu = `${server.issuer}/par`) => proof(key, { claims: { htu } });
    const mismatch = await postForm(
      `${server.url}/par`,
      { ...body, dpop_jkt: await thumbprint(other) },
      { headers: { dpop: await parProof(k) } },
    );
    expectDpopError(mismatch, /dpop_jkt/);
    const wrongHtu = await postForm(`${server.url}/par`, body, {
      headers: { dpop: await parProof(k, `${server.issuer}/token`) },
    });
    expectDpopError(wrongHtu, /htu/);
    const same = await postForm(
      `${server.url}/par`,
      { ...body, dpop_jkt: await thumbprint(k) },
      { headers: { dpop: await parProof(k) } },
    );
    expect(same.status, same.text).toBe(201);
    const failed = await readEvents(server, "WHERE type = 'authorization.failed' AND client_id = 'web'");
    expect(failed.some((e) => e.data.error === 'invalid_dpop_proof' && e.data.endpoint === 'par')).toBe(true);
  });
});

describe('server nonces (dpop.require_nonce)', () => {
  let k: KeyPair;
  beforeAll(async () => {
    k = await keyPair();
  });

  // Before any test moves the server's clock: oauth4webapi signs with the real time.
  it('oauth4webapi follows the nonce challenge (retry with the DPoP-Nonce it was given)', async () => {
    const as = await discover(nonceServer);
    const client: oauth.Client = { client_id: 'svc' };
    const DPoP = oauth.DPoP(client, k);
    const res = await withNonceRetry(async () =>
      oauth.processClientCredentialsResponse(
        as,
        client,
        await oauth.clientCredentialsGrantRequest(
          as,
          client,
          oauth.ClientSecretBasic(svcSecret),
          {},
          {
            DPoP,
            ...insecure,
          },
        ),
      ),
    );
    expect(res.token_type).toBe('dpop');
    expect(decodeJwt(res.access_token).cnf).toEqual({ jkt: await thumbprint(k) });
  });

  it('a proof without a nonce gets use_dpop_nonce and a DPoP-Nonce header; with it, a token and the nonce again', async () => {
    const r = await ccToken(await proof(k, { s: nonceServer }), nonceServer);
    expect(r.status, r.text).toBe(400);
    expect(r.json?.error).toBe('use_dpop_nonce');
    const nonce = r.headers.get('dpop-nonce');
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const ok = await ccToken(await proof(k, { s: nonceServer, claims: { nonce } }), nonceServer);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.headers.get('dpop-nonce')).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });

  it('a made-up nonce is refused', async () => {
    const r = await ccToken(await proof(k, { s: nonceServer, claims: { nonce: 'x'.repeat(43) } }), nonceServer);
    expect(r.json?.error).toBe('use_dpop_nonce');
    expect(r.json?.error_description).toMatch(/stale/);
  });

  it('a nonce is accepted for its period and the next, then refused; the server without require_nonce ignores it', async () => {
    const first = await ccToken(await proof(k, { s: nonceServer }), nonceServer);
    const nonce = first.headers.get('dpop-nonce') as string;
    await nonceServer.advanceClock(60);
    const next = await ccToken(await proof(k, { s: nonceServer, claims: { nonce } }), nonceServer);
    expect(next.status, next.text).toBe(200);
    expect(next.headers.get('dpop-nonce')).not.toBe(nonce);
    await nonceServer.advanceClock(60);
    const late = await ccToken(await proof(k, { s: nonceServer, claims: { nonce } }), nonceServer);
    expect(late.json?.error).toBe('use_dpop_nonce');
    expect(late.headers.get('dpop-nonce')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(late.headers.get('dpop-nonce')).not.toBe(nonce);
  });
});
