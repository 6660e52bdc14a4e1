/**
 * The API gateway, black-box: a real Portcullis process (authorization server + gateway listener) in front of a
 * real node:http upstream. Tokens come from the real token endpoint; forged ones are built here.
 */
import {
  createHash,
  createHmac,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  randomUUID,
  sign,
} from 'node:crypto';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import * as oauth from 'oauth4webapi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { bearer, call, startUpstream, type Upstream } from './helpers/gateway.ts';
import { metricValue } from './helpers/metrics.ts';
import { API, BILLING, baseConfig, claimsOf, fetchJwks, getToken, postForm, revoke, secret } from './helpers/oauth.ts';
import { freePort, type RunningServer, startServer } from './helpers/server.ts';
import { ALICE, authorizeUrl, codeFlow, WEB_CB } from './helpers/signin.ts';
import { serverNow } from './helpers/totp.ts';

let server: RunningServer;
let upstream: Upstream;
let gw: string;
let clients: ReturnType<typeof baseConfig>['clients'];
/** The first server's configuration, for a second gateway set up differently (public_origin). */
let serverConfig: Record<string, unknown>;
let mcpResource: string;
const mcpClient = { client_id: 'mcp-client', client_secret: secret() };

beforeAll(async () => {
  upstream = await startUpstream();
  const closedPort = await freePort();
  const gwPort = await freePort();
  mcpResource = `http://127.0.0.1:${gwPort}/mcp`;
  const base = baseConfig();
  clients = base.clients;
  const config = base.config;
  (config.resources as unknown[]).push({ identifier: mcpResource, name: 'MCP server', scopes: ['mcp:use'] });
  (config.clients as unknown[]).push(
    { client_id: mcpClient.client_id, client_secret: mcpClient.client_secret, scope: 'mcp:use' },
    {
      client_id: 'web',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code'],
      redirect_uris: [WEB_CB],
      scope: 'openid orders:read',
    },
  );
  config.users = [{ ...ALICE }];
  const any = { '*': [] as string[] };
  config.gateway = {
    listen: { host: '127.0.0.1', port: gwPort },
    routes: [
      {
        name: 'orders',
        path_prefix: '/orders',
        upstream: upstream.url,
        resource: API,
        scopes: { GET: ['orders:read'], POST: ['orders:write'] },
      },
      {
        name: 'orders-v2',
        path_prefix: '/v2/orders',
        upstream: `${upstream.url}/base`,
        resource: API,
        scopes: { '*': ['orders:read'] },
        strip_prefix: true,
        forward_authorization: true,
        identity_headers: false,
      },
      { name: 'billing', path_prefix: '/billing', upstream: upstream.url, resource: BILLING, scopes: any },
      { name: 'mcp', path_prefix: '/mcp', upstream: upstream.url, resource: mcpResource, scopes: { '*': ['mcp:use'] } },
      { name: 'down', path_prefix: '/down', upstream: `http://127.0.0.1:${closedPort}`, resource: API, scopes: any },
      { name: 'slow', path_prefix: '/slow', upstream: upstream.url, resource: API, scopes: any, timeout: 1 },
      { name: 'stream', path_prefix: '/stream', upstream: upstream.url, resource: API, scopes: any },
      {
        name: 'limited',
        path_prefix: '/limited',
        upstream: upstream.url,
        resource: API,
        scopes: any,
        rate_limit: { limit: 2, window: '1m' },
      },
      {
        name: 'dpop-only',
        path_prefix: '/secure',
        upstream: upstream.url,
        resource: API,
        scopes: any,
        dpop: 'required',
      },
    ],
  };
  serverConfig = config;
  server = await startServer(config);
  gw = `http://127.0.0.1:${gwPort}`;
});

afterAll(async () => {
  await server?.close();
  await upstream?.close();
});

async function svcToken(scope = 'orders:read'): Promise<string> {
  return (await getToken(server, clients.svc, { scope })).access_token;
}

/** The gateway.denied events so far, newest last. */
async function denials() {
  return readEvents(server, "WHERE type = 'gateway.denied'");
}

/** The latest gateway.denied event (written before the refusal was answered). */
async function lastDenial() {
  const all = await denials();
  return all[all.length - 1];
}

/** How many requests reached the upstream during fn. */
async function reached(fn: () => Promise<unknown>): Promise<number> {
  const before = upstream.requests.length;
  await fn();
  return upstream.requests.length - before;
}

function b64(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

/** Valid-looking claims for the orders API, copied from a real token so only the forged part differs. */
async function realClaims(): Promise<Record<string, unknown>> {
  return claimsOf(await svcToken());
}

describe('allowed requests', () => {
  it('forwards a valid token: path and query kept, identity headers set, Authorization stripped', async () => {
    const token = await svcToken();
    const claims = claimsOf(token);
    const r = await call(gw, '/orders/7?x=1&y=2', { headers: bearer(token) });
    expect(r.status, r.text).toBe(200);
    expect(r.headers['x-upstream']).toBe('yes');
    const seen = r.json as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe('/orders/7?x=1&y=2');
    expect(seen.headers['x-portcullis-sub']).toBe('svc');
    expect(seen.headers['x-portcullis-client-id']).toBe('svc');
    expect(seen.headers['x-portcullis-scope']).toBe('orders:read');
    expect(seen.headers['x-portcullis-jti']).toBe(claims.jti);
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe(new URL(gw).host);
  });

  it('removes client-sent identity and forwarding headers and hop-by-hop headers (also those named in Connection)', async () => {
    const token = await svcToken();
    const r = await call(gw, '/orders', {
      headers: {
        ...bearer(token),
        'x-portcullis-sub': 'admin',
        'X-Portcullis-Client-Id': 'root',
        'x-portcullis-role': 'superuser',
        'x-forwarded-for': '10.9.8.7',
        forwarded: 'for=10.9.8.7',
        'x-real-ip': '10.9.8.7',
        connection: 'keep-alive, x-secret-hop',
        'x-secret-hop': 'do-not-forward',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        'x-kept': 'kept',
      },
    });
    expect(r.status, r.text).toBe(200);
    const h = (r.json as { headers: Record<string, string> }).headers;
    expect(h['x-portcullis-sub']).toBe('svc');
    expect(h['x-portcullis-client-id']).toBe('svc');
    expect(h['x-portcullis-role']).toBeUndefined();
    expect(h['x-forwarded-for']).toBe('127.0.0.1');
    expect(h.forwarded).toBeUndefined();
    expect(h['x-real-ip']).toBeUndefined();
    expect(h['x-secret-hop']).toBeUndefined();
    expect(h['keep-alive']).toBeUndefined();
    expect(h['proxy-authorization']).toBeUndefined();
    expect(h['x-kept']).toBe('kept');
  });

  it('drops hop-by-hop response headers (also those the upstream names in Connection)', async () => {
    upstream.on('/orders/hop', (req, res) => {
      req.resume();
      res.setHeader('connection', 'x-upstream-hop');
      res.setHeader('x-upstream-hop', 'secret');
      res.setHeader('keep-alive', 'timeout=5');
      res.setHeader('x-end-to-end', 'yes');
      res.end('ok');
    });
    const r = await call(gw, '/orders/hop', { headers: bearer(await svcToken()) });
    expect(r.status, r.text).toBe(200);
    expect(r.text).toBe('ok');
    expect(r.headers['x-end-to-end']).toBe('yes');
    expect(r.headers['x-upstream-hop']).toBeUndefined();
    expect(r.headers['keep-alive']).toBeUndefined();
  });

  it('passes the response through as sent: status, repeated Set-Cookie, sized or chunked body, HEAD', async () => {
    upstream.on('/stream/as-sent', (req, res) => {
      req.resume();
      res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/']);
      if (req.url?.endsWith('/chunked')) {
        res.writeHead(201, { 'content-type': 'text/plain' });
        res.write('part one, ');
        setTimeout(() => res.end('part two'), 50);
        return;
      }
      res.writeHead(202, { 'content-type': 'text/plain', 'content-length': 5 });
      res.end(req.method === 'HEAD' ? undefined : 'sized');
    });
    const headers = bearer(await svcToken());
    const sized = await call(gw, '/stream/as-sent/sized', { headers });
    expect(sized.status, sized.text).toBe(202);
    expect(sized.text).toBe('sized');
    expect(sized.headers['content-length']).toBe('5');
    expect(sized.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    const chunked = await call(gw, '/stream/as-sent/chunked', { headers });
    expect(chunked.status, chunked.text).toBe(201);
    expect(chunked.text).toBe('part one, part two');
    expect(chunked.headers['transfer-encoding']).toBe('chunked');
    expect(chunked.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    const head = await call(gw, '/stream/as-sent/sized', { method: 'HEAD', headers });
    expect(head.status).toBe(202);
    expect(head.text).toBe('');
    expect(head.headers['content-length']).toBe('5');
  });

  it('accepts the scheme name in any case (RFC 9110 §11.1)', async () => {
    const token = await svcToken();
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      const r = await call(gw, '/orders', { headers: { authorization: `${scheme} ${token}` } });
      expect(r.status, `${scheme}: ${r.text}`).toBe(200);
    }
  });

  it('strips the prefix onto the upstream path and forwards Authorization when the route says so', async () => {
    const token = await svcToken();
    const r = await call(gw, '/v2/orders/9?q=1', { headers: { ...bearer(token), 'x-portcullis-sub': 'forged' } });
    expect(r.status, r.text).toBe(200);
    const seen = r.json as { url: string; headers: Record<string, string> };
    expect(seen.url).toBe('/base/9?q=1');
    expect(seen.headers.authorization).toBe(`Bearer ${token}`);
    // identity_headers: false sends none, and a client's own copies are removed all the same.
    expect(seen.headers['x-portcullis-sub']).toBeUndefined();
    expect((await call(gw, '/v2/orders', { headers: bearer(token) })).json?.url).toBe('/base/');
  });

  it("accepts a user's access token from the code flow", async () => {
    const { userToken } = await signInTokens();
    const r = await call(gw, '/orders/mine', { headers: bearer(userToken) });
    expect(r.status, r.text).toBe(200);
    const h = (r.json as { headers: Record<string, string> }).headers;
    expect(h['x-portcullis-client-id']).toBe('web');
    expect(h['x-portcullis-sub']).toBe(claimsOf(userToken).sub);
  });
});

/** Signs alice in through the web client; returns its access token and ID token. */
async function signInTokens(): Promise<{ userToken: string; idToken: string }> {
  const b = new Browser(server.url);
  const { url, verifier } = authorizeUrl({ scope: 'openid orders:read' });
  const q = await codeFlow(b, url);
  const r = await postForm(`${server.url}/token`, {
    grant_type: 'authorization_code',
    client_id: 'web',
    code: q.code ?? '',
    code_verifier: verifier,
    redirect_uri: WEB_CB,
  });
  expect(r.status, r.text).toBe(200);
  return { userToken: String(r.json?.access_token), idToken: String(r.json?.id_token) };
}

describe('refused requests (RFC 6750 errors, gateway.denied events, never forwarded)', () => {
  it('no token: 401 with a challenge without error code, naming the resource metadata', async () => {
    let r!: Awaited<ReturnType<typeof call>>;
    expect(await reached(async () => (r = await call(gw, '/orders')))).toBe(0);
    expect(r.status).toBe(401);
    const challenge = String(r.headers['www-authenticate']);
    expect(challenge).toMatch(/^Bearer realm="portcullis"/);
    expect(challenge).not.toMatch(/error=/);
    expect(challenge).toContain('resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"');
    const e = await lastDenial();
    expect(e?.data).toMatchObject({ reason: 'no_token', route: 'orders', ip: '127.0.0.1', method: 'GET' });
  });

  it('wrong audience: a token for another API is refused (401 invalid_token)', async () => {
    const { access_token } = await getToken(server, clients.billing);
    let r!: Awaited<ReturnType<typeof call>>;
    expect(await reached(async () => (r = await call(gw, '/orders', { headers: bearer(access_token) })))).toBe(0);
    expect(r.status).toBe(401);
    expect(r.json?.error).toBe('invalid_token');
    expect(String(r.headers['www-authenticate'])).toMatch(/error="invalid_token"/);
    const e = await lastDenial();
    expect(e?.data).toMatchObject({ reason: 'wrong_audience', route: 'orders', ip: '127.0.0.1' });
    expect(e?.client_id).toBe('billing');
    expect(e?.jti).toBe(claimsOf(access_token).jti);
    // The same token works on its own API.
    expect((await call(gw, '/billing/invoices', { headers: bearer(access_token) })).status).toBe(200);
  });

  it('missing scope: 403 insufficient_scope naming the scope the method needs', async () => {
    const token = await svcToken('orders:read');
    let r!: Awaited<ReturnType<typeof call>>;
    const n = await reached(async () => {
      r = await call(gw, '/orders', {
        method: 'POST',
        headers: { ...bearer(token), 'content-type': 'text/plain' },
        body: 'x',
      });
    });
    expect(n).toBe(0);
    expect(r.status).toBe(403);
    expect(r.json?.error).toBe('insufficient_scope');
    expect(String(r.headers['www-authenticate'])).toMatch(/error="insufficient_scope".*scope="orders:write"/);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'insufficient_scope', route: 'orders', method: 'POST' });
    // With the scope, POST goes through (and its body with it).
    const writer = await svcToken('orders:read orders:write');
    const ok = await call(gw, '/orders', {
      method: 'POST',
      headers: { ...bearer(writer), 'content-type': 'text/plain' },
      body: 'x',
    });
    expect(ok.status, ok.text).toBe(200);
  });

  it('a method the route does not name is refused (405)', async () => {
    const token = await svcToken('orders:read orders:write');
    const r = await call(gw, '/orders/1', { method: 'DELETE', headers: bearer(token) });
    expect(r.status).toBe(405);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'method_not_allowed' });
  });

  it('revoked through /revoke: refused at once, even though the token was verified and cached', async () => {
    const token = await svcToken();
    expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(200);
    expect((await revoke(server, clients.svc, token)).status).toBe(200);
    const r = await call(gw, '/orders', { headers: bearer(token) });
    expect(r.status).toBe(401);
    expect(r.json?.error_description).toMatch(/revoked/);
    const e = await lastDenial();
    expect(e?.data).toMatchObject({ reason: 'revoked' });
    expect(e?.jti).toBe(claimsOf(token).jti);
  });

  it('revoked with the CLI (another process): refused within a second and a half', async () => {
    const token = await svcToken();
    expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(200);
    const jti = String(claimsOf(token).jti);
    const cli = await server.cli(['revoke', '--jti', jti]);
    expect(cli.code, cli.stderr).toBe(0);
    const t0 = Date.now();
    let status = 200;
    while (Date.now() - t0 < 5000) {
      status = (await call(gw, '/orders', { headers: bearer(token) })).status;
      if (status === 401) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(status).toBe(401);
    expect(Date.now() - t0).toBeLessThan(1500);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'revoked' });
  });

  it('a token in the query string is refused, never forwarded (even with a valid header)', async () => {
    const token = await svcToken();
    for (const q of [`access_token=${token}`, `a=1&ACCESS_TOKEN=${token}`, `access%5Ftoken=${token}`]) {
      let r!: Awaited<ReturnType<typeof call>>;
      expect(await reached(async () => (r = await call(gw, `/orders?${q}`, { headers: bearer(token) })))).toBe(0);
      expect(r.status, q).toBe(400);
      expect(r.json?.error).toBe('invalid_request');
      expect(String(r.headers['www-authenticate'])).toMatch(/error="invalid_request"/);
      expect((await lastDenial())?.data).toMatchObject({ reason: 'token_in_query' });
    }
  });

  it('default deny: paths no route matches are refused (404), also near-misses of a prefix', async () => {
    const token = await svcToken();
    for (const p of ['/', '/admin', '/ordersX', '/order']) {
      let r!: Awaited<ReturnType<typeof call>>;
      expect(await reached(async () => (r = await call(gw, p, { headers: bearer(token) })))).toBe(0);
      expect(r.status, p).toBe(404);
      expect((await lastDenial())?.data).toMatchObject({ reason: 'no_route', route: null, path: p });
    }
  });

  it('paths with dot segments or encoded slashes are refused, not normalised', async () => {
    const token = await svcToken();
    for (const p of [
      '/orders/../admin',
      '/orders/%2e%2e/admin',
      '/orders/.%2E/x',
      '/orders/a%2Fb',
      '/orders//x',
      '/orders/./x',
    ]) {
      let r!: Awaited<ReturnType<typeof call>>;
      expect(await reached(async () => (r = await call(gw, p, { headers: bearer(token) })))).toBe(0);
      expect(r.status, p).toBe(400);
      expect((await lastDenial())?.data).toMatchObject({ reason: 'bad_path' });
    }
  });

  it('an absolute-form request target is refused (the gateway is no forward proxy)', async () => {
    const token = await svcToken();
    let r!: Awaited<ReturnType<typeof call>>;
    expect(await reached(async () => (r = await call(gw, `${upstream.url}/orders`, { headers: bearer(token) })))).toBe(
      0,
    );
    expect(r.status).toBe(400);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'bad_request_target' });
  });

  it('two Authorization headers are refused', async () => {
    const token = await svcToken();
    const r = await call(gw, '/orders', { headers: { authorization: [`Bearer ${token}`, 'Bearer other'] } });
    expect(r.status).toBe(400);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'multiple_credentials' });
  });

  it('another scheme is refused', async () => {
    const r = await call(gw, '/orders', { headers: { authorization: 'Basic c3ZjOnNlY3JldA==' } });
    expect(r.status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'unsupported_scheme' });
  });

  it('an ID token presented as an access token is refused (typ is not at+jwt)', async () => {
    const { idToken } = await signInTokens();
    const r = await call(gw, '/orders', { headers: bearer(idToken) });
    expect(r.status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'not_an_access_token' });
  });
});

describe('forged tokens', () => {
  it('alg none is refused', async () => {
    const claims = await realClaims();
    const kid = (await fetchJwks(server)).keys[0]?.kid;
    const token = `${b64({ alg: 'none', typ: 'at+jwt', kid })}.${b64(claims)}.`;
    for (const t of [token, `${token}AAAA`]) {
      const r = await call(gw, '/orders', { headers: bearer(t) });
      expect(r.status).toBe(401);
    }
    expect((await lastDenial())?.data).toMatchObject({ reason: 'alg_not_allowed' });
  });

  it('HS256 keyed with our public key (algorithm confusion) is refused', async () => {
    const claims = await realClaims();
    const jwk = (await fetchJwks(server)).keys[0] as Record<string, unknown>;
    const pem = createPublicKey({ key: jwk as never, format: 'jwk' }).export({ format: 'pem', type: 'spki' });
    for (const secretKey of [String(pem), JSON.stringify(jwk)]) {
      const input = `${b64({ alg: 'HS256', typ: 'at+jwt', kid: jwk.kid })}.${b64(claims)}`;
      const sig = createHmac('sha256', secretKey).update(input).digest('base64url');
      const r = await call(gw, '/orders', { headers: bearer(`${input}.${sig}`) });
      expect(r.status).toBe(401);
      expect((await lastDenial())?.data).toMatchObject({ reason: 'alg_not_allowed' });
    }
  });

  it('an unknown kid is refused', async () => {
    const claims = await realClaims();
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const input = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'attacker-key' })}.${b64(claims)}`;
    const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString(
      'base64url',
    );
    const r = await call(gw, '/orders', { headers: bearer(`${input}.${sig}`) });
    expect(r.status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'unknown_kid' });
  });

  it('jku, x5u and jwk headers are ignored and never fetched', async () => {
    let fetched = 0;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const attackerJwk = { ...publicKey.export({ format: 'jwk' }), kid: 'attacker-key', alg: 'ES256', use: 'sig' };
    const keyServer = createServer((_req, res) => {
      fetched++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [attackerJwk] }));
    });
    await new Promise<void>((r) => keyServer.listen(0, '127.0.0.1', r));
    const keyUrl = `http://127.0.0.1:${(keyServer.address() as AddressInfo).port}/jwks`;
    try {
      const claims = await realClaims();
      const ourKid = (await fetchJwks(server)).keys[0]?.kid;
      const headers = [
        { alg: 'ES256', typ: 'at+jwt', kid: 'attacker-key', jku: keyUrl },
        { alg: 'ES256', typ: 'at+jwt', kid: 'attacker-key', x5u: keyUrl },
        { alg: 'ES256', typ: 'at+jwt', kid: ourKid, jku: keyUrl },
        { alg: 'ES256', typ: 'at+jwt', kid: ourKid, jwk: attackerJwk },
      ];
      const reasons: unknown[] = [];
      for (const h of headers) {
        const input = `${b64(h)}.${b64(claims)}`;
        const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
        const r = await call(gw, '/orders', { headers: bearer(`${input}.${sig.toString('base64url')}`) });
        expect(r.status).toBe(401);
        reasons.push((await lastDenial())?.data.reason);
      }
      expect(reasons).toEqual(['unknown_kid', 'unknown_kid', 'bad_signature', 'bad_signature']);
      expect(fetched).toBe(0);
    } finally {
      await new Promise((r) => keyServer.close(r));
    }
  });

  it('a crit header or another issuer is refused before any signature check', async () => {
    const claims = await realClaims();
    const kid = (await fetchJwks(server)).keys[0]?.kid;
    const crit = `${b64({ alg: 'ES256', typ: 'at+jwt', kid, crit: ['exp'], exp: 1 })}.${b64(claims)}.AAAA`;
    expect((await call(gw, '/orders', { headers: bearer(crit) })).status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'unsupported_header' });
    const iss = `${b64({ alg: 'ES256', typ: 'at+jwt', kid })}.${b64({ ...claims, iss: 'https://evil.example.com' })}.AAAA`;
    expect((await call(gw, '/orders', { headers: bearer(iss) })).status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'wrong_issuer' });
  });

  it('a tampered payload (scope widened) fails the signature', async () => {
    const token = await svcToken('orders:read');
    const [h, , s] = token.split('.');
    const claims = { ...claimsOf(token), scope: 'orders:read orders:write' };
    const r = await call(gw, '/orders', {
      method: 'POST',
      headers: bearer(`${h}.${b64(claims)}.${s}`),
      body: 'x',
    });
    expect(r.status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'bad_signature' });
  });
});

describe('known-invalid tokens (gateway.invalid_token_cache_size)', () => {
  const CHECKS = 'portcullis_gateway_token_checks_total';
  const checks = async () => ({
    full: await metricValue(server, CHECKS, { outcome: 'invalid' }),
    cached: await metricValue(server, CHECKS, { outcome: 'invalid_cached' }),
  });

  it('a forged token sent again is refused (401, gateway.denied each time) without a second signature check', async () => {
    const token = await svcToken('orders:read');
    const [h, , sig] = token.split('.');
    const forged = `${h}.${b64({ ...claimsOf(token), scope: 'orders:read orders:write', n: randomUUID() })}.${sig}`;
    const before = await checks();
    const deniedBefore = (await denials()).length;
    for (let i = 0; i < 3; i++) {
      const n = await reached(async () => {
        const r = await call(gw, '/orders', { headers: bearer(forged) });
        expect(r.status).toBe(401);
        expect(r.json).toMatchObject({ error: 'invalid_token', error_description: 'the access token is not valid' });
        expect(String(r.headers['www-authenticate'])).toMatch(/^Bearer realm="portcullis", error="invalid_token"/);
      });
      expect(n).toBe(0);
    }
    const after = await checks();
    expect(after.full - before.full).toBe(1);
    expect(after.cached - before.cached).toBe(2);
    const denied = (await denials()).slice(deniedBefore);
    expect(denied.map((e) => e.data.reason)).toEqual(['bad_signature', 'bad_signature', 'bad_signature']);
    // On another route the refusal carries that route's challenge.
    const other = await call(gw, '/mcp/x', { headers: bearer(forged) });
    expect(other.status).toBe(401);
    expect(String(other.headers['www-authenticate'])).toContain('oauth-protected-resource/mcp');
  });

  it('an unknown kid is never remembered (the key may be published later): checked in full every time', async () => {
    const claims = await realClaims();
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const input = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: `later-${randomUUID()}` })}.${b64(claims)}`;
    const sig = sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' });
    const token = `${input}.${sig.toString('base64url')}`;
    const before = await checks();
    for (let i = 0; i < 2; i++) expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(401);
    const after = await checks();
    expect(after.full - before.full).toBe(2);
    expect(after.cached - before.cached).toBe(0);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'unknown_kid' });
  });

  it('a valid token is unaffected: verified once, then served from the verified-token cache', async () => {
    const token = await svcToken();
    const before = await metricValue(server, CHECKS, { outcome: 'valid' });
    for (let i = 0; i < 3; i++) expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(200);
    expect((await metricValue(server, CHECKS, { outcome: 'valid' })) - before).toBe(1);
  });
});

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

/** A DPoP proof (RFC 9449 §4.2) for a request to url with method, bound to the access token when given. */
async function proofFor(
  k: KeyPair,
  method: string,
  url: string,
  accessToken?: string,
  over: Record<string, unknown> = {},
  s: RunningServer = server,
) {
  const jwk = await exportJWK(k.publicKey);
  return new SignJWT({
    htm: method,
    htu: url,
    jti: randomUUID(),
    iat: Math.floor((await serverNow(s)) / 1000),
    ...(accessToken ? { ath: createHash('sha256').update(accessToken).digest('base64url') } : {}),
    ...over,
  })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
    .sign(k.privateKey);
}

/** An access token from svc bound to k (client_credentials with a DPoP proof). */
async function boundToken(k: KeyPair, s: RunningServer = server): Promise<string> {
  const r = await postForm(
    `${s.url}/token`,
    { grant_type: 'client_credentials', scope: 'orders:read' },
    {
      basic: [clients.svc.client_id, clients.svc.client_secret],
      headers: { dpop: await proofFor(k, 'POST', `${s.issuer}/token`, undefined, {}, s) },
    },
  );
  expect(r.status, r.text).toBe(200);
  expect(r.json?.token_type).toBe('DPoP');
  return r.json?.access_token as string;
}

describe('DPoP (RFC 9449)', () => {
  it('a route with dpop: required refuses a Bearer token with a DPoP challenge', async () => {
    const r = await call(gw, '/secure', { headers: bearer(await svcToken()) });
    expect(r.status).toBe(401);
    expect(String(r.headers['www-authenticate'])).toMatch(
      /^DPoP algs="[^"]+", realm="portcullis", error="invalid_token"/,
    );
    expect((await lastDenial())?.data).toMatchObject({ reason: 'dpop_required', route: 'dpop-only' });
  });

  it('a DPoP-bound token with a valid proof passes, on DPoP-only and ordinary routes', async () => {
    const k = await generateKeyPair('ES256');
    const token = await boundToken(k);
    for (const path of ['/secure', '/orders']) {
      const p = await proofFor(k, 'GET', `${gw}${path}`, token);
      const n = await reached(async () => {
        const r = await call(gw, path, { headers: { authorization: `DPoP ${token}`, dpop: p } });
        expect(r.status, JSON.stringify(r.json)).toBe(200);
      });
      expect(n).toBe(1);
    }
  });

  it('refuses a proof for another URL or method, a replayed proof, another key, a missing ath, and an unbound token', async () => {
    const k = await generateKeyPair('ES256');
    const other = await generateKeyPair('ES256');
    const token = await boundToken(k);
    const url = `${gw}/secure`;
    const replayed = await proofFor(k, 'GET', url, token);
    expect((await call(gw, '/secure', { headers: { authorization: `DPoP ${token}`, dpop: replayed } })).status).toBe(
      200,
    );
    const cases: Array<[string, string, string]> = [
      ['wrong htu', `DPoP ${token}`, await proofFor(k, 'GET', `${gw}/orders`, token)],
      ['wrong htm', `DPoP ${token}`, await proofFor(k, 'POST', url, token)],
      ['replayed jti', `DPoP ${token}`, replayed],
      ['another key', `DPoP ${token}`, await proofFor(other, 'GET', url, token)],
      ['no ath', `DPoP ${token}`, await proofFor(k, 'GET', url)],
      ['unbound token', `DPoP ${await svcToken()}`, await proofFor(k, 'GET', url)],
    ];
    for (const [name, authorization, dpop] of cases) {
      const n = await reached(async () => {
        const r = await call(gw, '/secure', { headers: { authorization, dpop } });
        expect(r.status, name).toBe(401);
        expect(String(r.headers['www-authenticate']), name).toMatch(/DPoP .*error="invalid_dpop_proof"/);
      });
      expect(n, name).toBe(0);
      expect((await lastDenial())?.data, name).toMatchObject({ reason: 'dpop_invalid' });
    }
    // A bound token presented as Bearer is refused (RFC 9449 §7.2).
    expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(401);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'dpop_bound_token_as_bearer' });
  });
});

describe('the origin clients use (htu, X-Forwarded-*, resource metadata)', () => {
  it('without gateway.public_origin: http and the Host header; client-sent X-Forwarded-Proto/Host change nothing', async () => {
    const k = await generateKeyPair('ES256');
    const token = await boundToken(k);
    const lying = { 'x-forwarded-proto': 'https', 'x-forwarded-host': 'gw.example.com' };
    const https = await proofFor(k, 'GET', 'https://gw.example.com/secure', token);
    const r = await call(gw, '/secure', { headers: { authorization: `DPoP ${token}`, dpop: https, ...lying } });
    expect(r.status).toBe(401);
    expect(r.json?.error_description).toMatch(/htu/);
    const ok = await call(gw, '/secure', {
      headers: { authorization: `DPoP ${token}`, dpop: await proofFor(k, 'GET', `${gw}/secure`, token), ...lying },
    });
    expect(ok.status, ok.text).toBe(200);
    const seen = (ok.json as { headers: Record<string, string> }).headers;
    expect(seen['x-forwarded-proto']).toBe('http');
    expect(seen['x-forwarded-host']).toBe(new URL(gw).host);
  });

  describe('with gateway.public_origin (behind a TLS-terminating load balancer)', () => {
    const PUBLIC = 'https://gw.example.com';
    let lb: RunningServer;
    let lbGw: string;
    beforeAll(async () => {
      const config = structuredClone(serverConfig);
      const gwPort = await freePort();
      const g = config.gateway as Record<string, unknown>;
      config.gateway = { ...g, listen: { host: '127.0.0.1', port: gwPort }, public_origin: PUBLIC };
      lb = await startServer(config);
      lbGw = `http://127.0.0.1:${gwPort}`;
    });
    afterAll(async () => {
      await lb?.close();
    });

    it('a proof must name the public origin in htu: one made for the address behind the balancer is refused', async () => {
      const k = await generateKeyPair('ES256');
      const token = await boundToken(k, lb);
      const auth = `DPoP ${token}`;
      for (const htu of [`${lbGw}/secure`, 'http://gw.example.com/secure', 'https://gw.example.com:8443/secure']) {
        const n = await reached(async () => {
          const r = await call(lbGw, '/secure', {
            headers: { authorization: auth, dpop: await proofFor(k, 'GET', htu, token, {}, lb) },
          });
          expect(r.status, htu).toBe(401);
          expect(r.json?.error_description, htu).toMatch(/htu/);
        });
        expect(n, htu).toBe(0);
      }
      const denied = await readEvents(lb, "WHERE type = 'gateway.denied'");
      expect(denied.at(-1)?.data).toMatchObject({ reason: 'dpop_invalid', route: 'dpop-only' });
      // Host says one thing, the public origin another: the public origin wins.
      const r = await call(lbGw, '/secure', {
        headers: { authorization: auth, dpop: await proofFor(k, 'GET', `${PUBLIC}/secure`, token, {}, lb) },
      });
      expect(r.status, r.text).toBe(200);
    });

    it('sends X-Forwarded-Proto https and the public host upstream, whatever the client claims', async () => {
      const { access_token } = await getToken(lb, clients.svc, { scope: 'orders:read' });
      const r = await call(lbGw, '/orders', {
        headers: { ...bearer(access_token), 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil.example.com' },
      });
      expect(r.status, r.text).toBe(200);
      const seen = (r.json as { headers: Record<string, string> }).headers;
      expect(seen['x-forwarded-proto']).toBe('https');
      expect(seen['x-forwarded-host']).toBe('gw.example.com');
    });

    it('WWW-Authenticate points to the resource metadata at the public origin', async () => {
      const r = await call(lbGw, '/mcp/tools');
      expect(r.status).toBe(401);
      expect(String(r.headers['www-authenticate'])).toContain(
        `resource_metadata="${PUBLIC}/.well-known/oauth-protected-resource/mcp"`,
      );
      const doc = await call(lbGw, '/.well-known/oauth-protected-resource/mcp');
      expect(doc.json).toMatchObject({ resource: mcpResource });
    });
  });
});

describe('forwarding', () => {
  it('streams large bodies both ways, without buffering either', async () => {
    const chunk = randomBytes(1 << 20);
    const chunks = 24; // 24 MiB each way
    let uploadSeen = 0;
    let onUpload: () => void = () => {};
    let downloadSeen = 0;
    let onDownload: () => void = () => {};
    const upHash = createHash('sha256');
    upstream.on('/stream', (req, res) => {
      req.on('data', (c: Buffer) => {
        uploadSeen += c.length;
        upHash.update(c);
        onUpload();
      });
      req.on('end', async () => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-upload-sha256': upHash.digest('hex') });
        // Send the first MiB, then wait until the client has it before sending the rest: a gateway that buffered
        // the whole response would never deliver it, and this would time out.
        res.write(chunk);
        await new Promise<void>((resolve) => {
          onDownload = () => downloadSeen >= chunk.length && resolve();
          onDownload();
        });
        for (let i = 1; i < chunks; i++) if (!res.write(chunk)) await new Promise((r) => res.once('drain', r));
        res.end();
      });
    });
    const token = await svcToken();
    const down = createHash('sha256');
    const result = await new Promise<{ status: number; uploadSha: string }>((resolve, reject) => {
      const u = new URL(gw);
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          method: 'POST',
          path: '/stream/upload',
          headers: { ...bearer(token), 'content-type': 'application/octet-stream' },
          agent: false,
        },
        (res) => {
          res.on('data', (c: Buffer) => {
            downloadSeen += c.length;
            down.update(c);
            onDownload();
          });
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, uploadSha: String(res.headers['x-upload-sha256']) }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      (async () => {
        // Chunked upload: the first MiB must reach the upstream before the rest is even sent.
        req.write(chunk);
        await new Promise<void>((resolve) => {
          onUpload = () => uploadSeen >= chunk.length && resolve();
          onUpload();
        });
        for (let i = 1; i < chunks; i++) if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        req.end();
      })().catch(reject);
    });
    const expected = createHash('sha256');
    for (let i = 0; i < chunks; i++) expected.update(chunk);
    const digest = expected.digest('hex');
    expect(result.status).toBe(200);
    expect(uploadSeen).toBe(chunks * chunk.length);
    expect(result.uploadSha).toBe(digest);
    expect(downloadSeen).toBe(chunks * chunk.length);
    expect(down.digest('hex')).toBe(digest);
  });

  it('upstream down: 502 without internal detail', async () => {
    const r = await call(gw, '/down/x', { headers: bearer(await svcToken()) });
    expect(r.status).toBe(502);
    expect(r.json?.error).toBe('upstream_unavailable');
    expect(r.text).not.toMatch(/ECONN|127\.0\.0\.1|refused|stack|undici/i);
  });

  it('slow upstream: 504 after the route timeout, without internal detail', async () => {
    upstream.on('/slow', (req, res) => {
      req.resume();
      const t = setTimeout(() => res.end('late'), 4000);
      res.on('close', () => clearTimeout(t));
    });
    const t0 = Date.now();
    const r = await call(gw, '/slow/x', { headers: bearer(await svcToken()) });
    expect(r.status).toBe(504);
    expect(r.json?.error).toBe('upstream_timeout');
    expect(r.text).not.toMatch(/UND_ERR|timeout error|stack|undici/i);
    expect(Date.now() - t0).toBeLessThan(3500);
  });
});

describe('per-client rate limit', () => {
  it('refuses the client over its limit on the route with 429 and Retry-After; other clients are unaffected', async () => {
    const token = await svcToken();
    expect((await call(gw, '/limited', { headers: bearer(token) })).status).toBe(200);
    expect((await call(gw, '/limited', { headers: bearer(token) })).status).toBe(200);
    // A second token of the same client shares the client's budget.
    const r = await call(gw, '/limited', { headers: bearer(await svcToken()) });
    expect(r.status).toBe(429);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    const e = await lastDenial();
    expect(e?.data).toMatchObject({ reason: 'rate_limited', route: 'limited' });
    expect(e?.client_id).toBe('svc');
    const hits = await readEvents(server, "WHERE type = 'rate_limit.hit'");
    expect(hits.some((h) => h.data.rule === 'gateway:limited' && h.data.key_kind === 'client')).toBe(true);
    // Another client has its own budget.
    const other = (await getToken(server, clients.apiRs)).access_token;
    expect((await call(gw, '/limited', { headers: bearer(other) })).status).toBe(200);
  });
});

describe('RFC 9728 protected resource metadata', () => {
  it('is served per resource and names this authorization server', async () => {
    // Two resources (api. and billing.example.com) share the path: the Host header picks one (RFC 9728 §3.3).
    const r = await call(gw, '/.well-known/oauth-protected-resource', { headers: { host: 'api.example.com' } });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      resource: API,
      authorization_servers: [server.issuer],
      scopes_supported: ['orders:read', 'orders:write'],
      bearer_methods_supported: ['header'],
      dpop_bound_access_tokens_required: true,
    });
    const billing = await call(gw, '/.well-known/oauth-protected-resource', {
      headers: { host: 'billing.example.com:443' },
    });
    expect(billing.json).toMatchObject({ resource: BILLING, dpop_bound_access_tokens_required: false });
    expect((await call(gw, '/.well-known/oauth-protected-resource')).status).toBe(404);
    const mcp = await call(gw, '/.well-known/oauth-protected-resource/mcp');
    expect(mcp.json).toMatchObject({ resource: mcpResource, resource_name: 'MCP server' });
  });

  it('a standard client goes from a 401 to the authorization server to a token that works (oauth4webapi)', async () => {
    const insecure = { [oauth.allowInsecureRequests]: true } as const;
    // A client holding no valid token yet: the 401's challenge tells it where the resource metadata is.
    const denied = await oauth
      .protectedResourceRequest('not-a-token', 'GET', new URL(`${gw}/mcp/tools`), undefined, undefined, insecure)
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(denied).toBeInstanceOf(oauth.WWWAuthenticateChallengeError);
    const challenges = (denied as oauth.WWWAuthenticateChallengeError).cause;
    expect(challenges.map((c) => c.scheme)).toEqual(['bearer', 'dpop']);
    const metadataUrl = challenges.find((c) => c.scheme === 'bearer')?.parameters.resource_metadata;
    expect(metadataUrl).toBe(`${gw}/.well-known/oauth-protected-resource/mcp`);
    const rs = await oauth.processResourceDiscoveryResponse(
      new URL(mcpResource),
      await oauth.resourceDiscoveryRequest(new URL(mcpResource), insecure),
    );
    const issuer = new URL(String(rs.authorization_servers?.[0]));
    const as = await oauth.processDiscoveryResponse(
      issuer,
      await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }),
    );
    const c = { client_id: mcpClient.client_id };
    const res = await oauth.clientCredentialsGrantRequest(
      as,
      c,
      oauth.ClientSecretBasic(mcpClient.client_secret),
      new URLSearchParams({ scope: 'mcp:use', resource: mcpResource }),
      insecure,
    );
    const tok = await oauth.processClientCredentialsResponse(as, c, res);
    const ok = await fetch(`${gw}/mcp/tools`, { headers: { authorization: `Bearer ${tok.access_token}` } });
    expect(ok.status).toBe(200);
  });
});

describe('usage records', () => {
  it('aggregates allowed requests per token and route into gateway.usage within about a second', async () => {
    const token = await svcToken();
    const jti = String(claimsOf(token).jti);
    for (let i = 0; i < 5; i++) expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(200);
    expect((await call(gw, '/v2/orders', { headers: bearer(token) })).status).toBe(200);
    let usage: Awaited<ReturnType<typeof readEvents>> = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 3000) {
      usage = await readEvents(server, "WHERE type = 'gateway.usage' AND jti = $1", [jti]);
      if (usage.length >= 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(Date.now() - t0).toBeLessThan(2000);
    const orders = usage.filter((e) => e.data.route === 'orders');
    expect(orders.reduce((n, e) => n + Number(e.data.count), 0)).toBe(5);
    expect(orders[0]?.data.ips).toEqual(['127.0.0.1']);
    expect(orders[0]?.client_id).toBe('svc');
    expect(Number(orders[0]?.data.first_seen)).toBeLessThanOrEqual(Number(orders[0]?.data.last_seen));
    expect(usage.filter((e) => e.data.route === 'orders-v2').reduce((n, e) => n + Number(e.data.count), 0)).toBe(1);
  });
});

// Moves the server's clock: keep last.
describe('lifetimes (fake clock)', () => {
  it('an expired token is refused, even though it was verified and cached while valid', async () => {
    const token = await svcToken();
    expect((await call(gw, '/orders', { headers: bearer(token) })).status).toBe(200);
    const { exp } = claimsOf(token);
    const now = (await server.advanceClock(0)).now_ms / 1000;
    await server.advanceClock(Number(exp) - now + 6); // past exp and the gateway's 5 s skew
    const r = await call(gw, '/orders', { headers: bearer(token) });
    expect(r.status).toBe(401);
    expect(r.json?.error_description).toMatch(/expired/);
    expect((await lastDenial())?.data).toMatchObject({ reason: 'expired' });
  });
});
