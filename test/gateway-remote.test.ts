/**
 * `portcullis start --role gateway`: the gateway running alone, in its own process, against an authorization
 * server in another process. It gets the issuer's keys and the revocations only from the server's
 * GET /revocations feed (no network call per request), keeps its own events in its own SQLite file, and never
 * needs the KEK. Black box: both are real processes, the upstream is a real node:http server.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { readEvents } from './helpers/db.ts';
import { bearer, call, startUpstream, type Upstream } from './helpers/gateway.ts';
import { API, baseConfig, claimsOf, getToken, kidOf, postForm, revoke, secret } from './helpers/oauth.ts';
import {
  type ConfigObject,
  freePort,
  makeTempDir,
  type RunningServer,
  runPortcullis,
  startServer,
} from './helpers/server.ts';
import { serverNow } from './helpers/totp.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let upstream: Upstream;
let server: RunningServer;
let gwNode: RunningServer;
let gw: string;
const { config: asConfig, clients } = baseConfig();
const feedClient = { client_id: 'gateway-1', client_secret: secret() };

/** The configuration of a gateway node following `server` (its secret comes from the environment). */
function gatewayConfig(gwPort: number): ConfigObject {
  return {
    log: { level: 'info' },
    revocation: { max_feed_lag: '1s' },
    // Nonces at the gateway (RFC 9449 §9), though the server does not ask for them: derived without any KEK.
    dpop: { require_nonce: true },
    resources: [{ identifier: API, scopes: ['orders:read', 'orders:write'] }],
    gateway: {
      listen: { host: '127.0.0.1', port: gwPort },
      routes: [
        {
          name: 'orders',
          path_prefix: '/orders',
          upstream: upstream.url,
          resource: API,
          scopes: { GET: ['orders:read'], POST: ['orders:write'] },
        },
      ],
      remote: { url: server.url, client_id: feedClient.client_id, client_secret: '${env:GATEWAY_FEED_SECRET}' },
    },
  };
}

async function startGatewayNode(): Promise<{ node: RunningServer; gw: string }> {
  const gwPort = await freePort();
  const node = await startServer(gatewayConfig(gwPort), {
    args: ['--role', 'gateway'],
    env: { GATEWAY_FEED_SECRET: feedClient.client_secret },
  });
  return { node, gw: `http://127.0.0.1:${gwPort}` };
}

async function readyz(node: RunningServer): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${node.url}/readyz`);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

/** Waits until the node reports ready (first complete read of the feed). */
async function waitReady(node: RunningServer, withinMs = 5000): Promise<void> {
  const t0 = performance.now();
  while ((await readyz(node)).status !== 200) {
    if (performance.now() - t0 > withinMs) throw new Error(`gateway node not ready after ${withinMs} ms`);
    await sleep(20);
  }
}

/** Asks the gateway every 10 ms until it answers `status`; returns how long that took (ms). */
async function msUntilStatus(base: string, token: string, status: number, limitMs = 3000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const r = await call(base, '/orders/1', { headers: bearer(token) });
    const elapsed = performance.now() - t0;
    if (r.status === status) return elapsed;
    if (elapsed > limitMs) throw new Error(`gateway still answered ${r.status} (${r.text}) after ${elapsed} ms`);
    await sleep(10);
  }
}

beforeAll(async () => {
  upstream = await startUpstream();
  (asConfig.clients as unknown[]).push({ client_id: feedClient.client_id, client_secret: feedClient.client_secret });
  server = await startServer({
    ...asConfig,
    keys: { jwks_max_age: '60s' },
    revocation: { feed_clients: [feedClient.client_id] },
  });
  ({ node: gwNode, gw } = await startGatewayNode());
  await waitReady(gwNode);
});

afterAll(async () => {
  await gwNode?.close();
  await server?.close();
  await upstream?.close();
});

describe('portcullis start --role gateway', () => {
  it('with a KEK it seals its own events into its own audit log, which verifies', async () => {
    const gwPort = await freePort();
    const node = await startServer(gatewayConfig(gwPort), {
      args: ['--role', 'gateway'],
      env: { GATEWAY_FEED_SECRET: feedClient.client_secret },
      kekEnv: true,
    });
    try {
      await waitReady(node);
      const t = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
      expect((await call(`http://127.0.0.1:${gwPort}`, '/orders/1', { headers: bearer(t) })).status).toBe(200);
      await node.stop(); // a clean stop seals everything, server.stopped included
      expect(await readEvents(node, 'WHERE leaf_index IS NULL')).toEqual([]);
      const key = (await node.cli(['audit', 'key'])).stdout.trim();
      expect(key).toMatch(/\/audit\/gateway\+[0-9a-f]{8}\+/);
      const v = await node.cli(['audit', 'verify', '--key', key]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
    } finally {
      await node.close();
    }
  });

  it('passes an allowed request to the upstream, and needs neither the KEK nor signing keys', async () => {
    const t = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    const r = await call(gw, '/orders/42?x=1', { headers: bearer(t) });
    expect(r.status, r.text).toBe(200);
    expect(r.headers['x-upstream']).toBe('yes');
    const seen = upstream.requests.at(-1);
    expect(seen?.url).toBe('/orders/42?x=1');
    expect(seen?.headers['x-portcullis-client-id']).toBe('svc');
    expect(seen?.headers.authorization).toBeUndefined();
    // Missing scope and no token are refused as at the in-process gateway.
    const post = await call(gw, '/orders', { method: 'POST', headers: bearer(t) });
    expect(post.status).toBe(403);
    expect((await call(gw, '/orders/1')).status).toBe(401);
    // RFC 9728 metadata sends clients to the remote authorization server.
    const prm = await call(gw, '/.well-known/oauth-protected-resource');
    expect(prm.json).toMatchObject({ resource: API, authorization_servers: [server.issuer] });
    // The gateway node never made a KEK (keys.kek_file points into its directory) and holds no signing key.
    expect(existsSync(join(gwNode.dir, 'kek'))).toBe(false);
    const ready = await readyz(gwNode);
    expect(ready).toMatchObject({ status: 200, body: { status: 'ready', role: 'gateway', revocation_feed: 'ok' } });
    // Prometheus metrics on the operations listener: the gateway's token checks are counted there.
    const metrics = await (await fetch(`${gwNode.url}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_gateway_token_checks_total\{outcome="valid"\} [1-9]/);
    // Its own events, in its own database.
    const started = await readEvents(gwNode, "WHERE type = 'server.started'");
    expect(started.at(-1)?.data).toMatchObject({ role: 'gateway', remote_url: server.url });
    const denied = await readEvents(gwNode, "WHERE type = 'gateway.denied'");
    expect(denied.map((e) => e.data.reason)).toEqual(expect.arrayContaining(['insufficient_scope', 'no_token']));
    let usage: Awaited<ReturnType<typeof readEvents>> = [];
    for (let i = 0; i < 50 && usage.length === 0; i++) {
      await sleep(100);
      usage = await readEvents(gwNode, "WHERE type = 'gateway.usage' AND jti = ?", [String(claimsOf(t).jti)]);
    }
    expect(usage[0]?.data).toMatchObject({ route: 'orders', count: 1 });
  });

  it('refuses a token revoked at the server within 1 s (measured)', async () => {
    const t = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    expect((await call(gw, '/orders/1', { headers: bearer(t) })).status).toBe(200);
    await sleep(200); // the gateway is waiting in its long poll
    expect((await revoke(server, clients.svc, t)).status).toBe(200);
    const ms = await msUntilStatus(gw, t, 401);
    console.log(`[gateway-remote] /revoke at the server -> 401 at the --role gateway process: ${ms.toFixed(1)} ms`);
    expect(ms).toBeLessThan(1000);
    const denied = await readEvents(gwNode, "WHERE type = 'gateway.denied' AND jti = ?", [String(claimsOf(t).jti)]);
    expect(denied.at(-1)?.data.reason).toBe('revoked');
  });

  it('accepts tokens signed by a key the server rotated to, and refuses expired ones (fake clocks)', async () => {
    const before = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    const r = await server.cli(['keys', 'rotate', '--reason', 'remote gateway test']);
    expect(r.code, r.stderr).toBe(0);
    // The next key signs one jwks_max_age (60 s) later: move both processes' clocks there.
    await server.advanceClock(61);
    await gwNode.advanceClock(61);
    const after = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    expect(kidOf(after)).not.toBe(kidOf(before));
    const ms = await msUntilStatus(gw, after, 200);
    console.log(`[gateway-remote] token signed by the new key accepted at the gateway after ${ms.toFixed(1)} ms`);
    // The old key is retiring, still published: its tokens stay valid until they expire.
    expect((await call(gw, '/orders/1', { headers: bearer(before) })).status).toBe(200);
    // Ten minutes on (access_token_ttl 10m, skew 5 s) at the gateway: expired.
    await gwNode.advanceClock(600);
    const expired = await call(gw, '/orders/1', { headers: bearer(before) });
    expect(expired.status).toBe(401);
    expect(expired.headers['www-authenticate']).toMatch(/invalid_token/);
    await server.advanceClock(600);
  });

  it('an emergency key rotation at the server stops the old key at the gateway; the new key works', async () => {
    const old = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    expect((await call(gw, '/orders/1', { headers: bearer(old) })).status).toBe(200);
    const r = await server.cli(['keys', 'rotate', '--emergency', '--reason', 'remote gateway test']);
    expect(r.code, r.stderr).toBe(0);
    const ms = await msUntilStatus(gw, old, 401);
    console.log(
      `[gateway-remote] emergency rotation -> old-key token refused at the gateway after ${ms.toFixed(1)} ms`,
    );
    expect(ms).toBeLessThan(1000);
    const fresh = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    expect(kidOf(fresh)).not.toBe(kidOf(old));
    await msUntilStatus(gw, fresh, 200);
  });

  it('checks DPoP proofs with its own nonces and its own replay cache', async () => {
    type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
    const k: KeyPair = await generateKeyPair('ES256');
    const jwk = await exportJWK(k.publicKey);
    const proof = async (method: string, url: string, extra: Record<string, unknown> = {}) =>
      new SignJWT({
        htm: method,
        htu: url,
        jti: randomUUID(),
        iat: Math.floor((await serverNow(server)) / 1000),
        ...extra,
      })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(k.privateKey);
    const tr = await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials', scope: 'orders:read' },
      {
        basic: [clients.svc.client_id, clients.svc.client_secret],
        headers: { dpop: await proof('POST', `${server.issuer}/token`) },
      },
    );
    expect(tr.status, tr.text).toBe(200);
    const token = String(tr.json?.access_token);
    const ath = createHash('sha256').update(token).digest('base64url');
    const url = `${gw}/orders/7`;
    const first = await call(gw, '/orders/7', {
      headers: { authorization: `DPoP ${token}`, dpop: await proof('GET', url, { ath }) },
    });
    expect(first.status).toBe(401);
    expect(String(first.headers['www-authenticate'])).toMatch(/error="use_dpop_nonce"/);
    const nonce = String(first.headers['dpop-nonce']);
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const good = await proof('GET', url, { ath, nonce });
    const ok = await call(gw, '/orders/7', { headers: { authorization: `DPoP ${token}`, dpop: good } });
    expect(ok.status, ok.text).toBe(200);
    const replay = await call(gw, '/orders/7', { headers: { authorization: `DPoP ${token}`, dpop: good } });
    expect(replay.status).toBe(401);
    expect(String(replay.headers['www-authenticate'])).toMatch(/error="invalid_dpop_proof"/);
    // A bound token presented as Bearer is refused.
    expect((await call(gw, '/orders/7', { headers: bearer(token) })).status).toBe(401);
  });

  it('fails closed when the server is unreachable longer than revocation.max_feed_lag, and recovers', async () => {
    const t = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    expect((await call(gw, '/orders/1', { headers: bearer(t) })).status).toBe(200);
    await server.stop();
    const t0 = performance.now();
    const ms = await msUntilStatus(gw, t, 503, 5000);
    console.log(`[gateway-remote] server down -> gateway refuses every token after ${ms.toFixed(0)} ms (bound 1 s)`);
    const refused = await call(gw, '/orders/1', { headers: bearer(t) });
    expect(refused.json?.error).toBe('temporarily_unavailable');
    expect((await readyz(gwNode)).body).toMatchObject({ status: 'not_ready', revocation_feed: 'down' });
    // Stays closed while the server is away.
    await sleep(300);
    expect((await call(gw, '/orders/1', { headers: bearer(t) })).status).toBe(503);
    expect(performance.now() - t0).toBeGreaterThan(1000);
    await server.restart();
    await msUntilStatus(gw, t, 200, 5000);
    expect((await readyz(gwNode)).status).toBe(200);
    const feedEvents = () => readEvents(gwNode, "WHERE type IN ('revocation.feed_lost', 'revocation.feed_restored')");
    let lost = await feedEvents();
    for (let i = 0; i < 50 && lost.at(-1)?.type !== 'revocation.feed_restored'; i++) {
      await sleep(50);
      lost = await feedEvents();
    }
    expect(lost.map((e) => e.type).slice(-2)).toEqual(['revocation.feed_lost', 'revocation.feed_restored']);
    expect(lost.at(-1)?.data).toMatchObject({ channel: 'remote' });
    const denied = await readEvents(gwNode, "WHERE type = 'gateway.denied' AND jti = ?", [String(claimsOf(t).jti)]);
    expect(denied.map((e) => e.data.reason)).toContain('revocation_feed_down');
  });

  it('refuses every token until it has read the JWKS and the whole revocation feed', async () => {
    const t = (await getToken(server, clients.svc, { scope: 'orders:read' })).access_token;
    await server.stop();
    let second: { node: RunningServer; gw: string } | undefined;
    try {
      // It starts (and says it is not ready) even though the server cannot be reached.
      second = await startGatewayNode();
      expect((await readyz(second.node)).body).toMatchObject({ status: 'not_ready', synced: false, keys: 0 });
      const r = await call(second.gw, '/orders/1', { headers: bearer(t) });
      expect(r.status).toBe(401);
      const requestsBefore = upstream.requests.length;
      await server.restart();
      await waitReady(second.node);
      expect((await call(second.gw, '/orders/1', { headers: bearer(t) })).status).toBe(200);
      expect(upstream.requests.length).toBe(requestsBefore + 1);
      const denied = await readEvents(second.node, "WHERE type = 'gateway.denied'");
      expect(denied[0]?.data.reason).toBe('unknown_kid');
      await second.node.stop(); // SIGTERM: a clean exit (0), after writing server.stopped
      const stopped = await readEvents(second.node, "WHERE type = 'server.stopped'");
      expect(stopped.at(-1)?.data).toMatchObject({ role: 'gateway' });
    } finally {
      if (!server.running) await server.restart();
      await second?.node.close();
    }
  });
});

describe('--role gateway configuration', () => {
  const run = async (config: ConfigObject, args: string[]) => {
    const dir = makeTempDir();
    const path = join(dir, 'portcullis.yaml');
    writeFileSync(path, toYaml({ storage: { url: `sqlite:${join(dir, 'p.db')}` }, ...config }));
    return runPortcullis(['start', '--config', path, ...args], { cwd: dir, timeoutMs: 20_000 });
  };
  const route = { path_prefix: '/orders', upstream: 'http://127.0.0.1:9', resource: API, scopes: { '*': [] } };
  const resources = [{ identifier: API, scopes: ['orders:read'] }];

  it('without gateway.remote is a configuration error naming the key', async () => {
    const r = await run({ resources, gateway: { listen: { port: 0 }, routes: [route] } }, ['--role', 'gateway']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/gateway\.remote: is required with --role gateway/);
    const none = await run({ resources }, ['--role', 'gateway']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/gateway: is required with --role gateway/);
  });

  it('gateway.remote without --role gateway is refused rather than starting an authorization server', async () => {
    const remote = { url: 'http://127.0.0.1:9', client_id: 'g', client_secret: 's' };
    const r = await run({ resources, gateway: { listen: { port: 0 }, routes: [route], remote } }, []);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/gateway\.remote: .*--role gateway/);
  });

  it('refuses an unknown role and a malformed gateway.remote', async () => {
    const bad = await run({ resources }, ['--role', 'nonsense']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/--role/);
    const remote = { url: 'ftp://x', client_id: '' };
    const r = await run({ resources, gateway: { routes: [route], remote } }, ['--role', 'gateway']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/gateway\.remote\.url/);
    expect(r.stderr).toMatch(/gateway\.remote\.client_secret: is required/);
  });
});
