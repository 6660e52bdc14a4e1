/**
 * The remote revocation feed (GET /revocations) and its client (src/gateway/remote-feed.ts), which a gateway
 * running apart from the authorization server (`portcullis start --role gateway`) uses to keep its revocation
 * set and the issuer's keys current. Black box: a real server process, the client module in this process.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteRevocationFeed } from '../src/gateway/remote-feed.ts';
import { systemClock } from '../src/lib/clock.ts';
import { baseConfig, claimsOf, getToken, kidOf, revoke, secret } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('remote revocation feed', () => {
  let server: RunningServer;
  const { config, clients } = baseConfig();
  const gw = { client_id: 'gateway-1', client_secret: secret() };
  const feeds: RemoteRevocationFeed[] = [];
  const follow = (over: Partial<ConstructorParameters<typeof RemoteRevocationFeed>[0]> = {}) => {
    const f = new RemoteRevocationFeed({
      url: server.url,
      clientId: gw.client_id,
      clientSecret: gw.client_secret,
      clock: systemClock,
      maxFeedLagMs: 1000,
      log: pino({ level: 'silent' }),
      ...over,
    });
    feeds.push(f);
    return f;
  };

  beforeAll(async () => {
    (config.clients as unknown[]).push({ client_id: gw.client_id, client_secret: gw.client_secret });
    server = await startServer({ ...config, revocation: { feed_clients: [gw.client_id] } });
  });
  afterAll(async () => {
    for (const f of feeds) await f.close();
    await server?.close();
  });

  it('refuses readers that are not authenticated or not listed in revocation.feed_clients', async () => {
    const anon = await fetch(`${server.url}/revocations`);
    expect(anon.status).toBe(401);
    const basic = (id: string, s: string) => `Basic ${Buffer.from(`${id}:${s}`).toString('base64')}`;
    const wrong = await fetch(`${server.url}/revocations`, {
      headers: { authorization: basic(gw.client_id, 'not-the-secret-at-all') },
    });
    expect(wrong.status).toBe(401);
    const other = await fetch(`${server.url}/revocations`, {
      headers: { authorization: basic(clients.svc.client_id, clients.svc.client_secret) },
    });
    expect(other.status).toBe(403);
    expect(((await other.json()) as Record<string, unknown>).error).toBe('unauthorized_client');
    const ok = await fetch(`${server.url}/revocations?after=0`, {
      headers: { authorization: basic(gw.client_id, gw.client_secret) },
    });
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ revocations: [], last_id: 0, more: false });
    expect((body.jwks as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
  });

  it('a revocation reaches a following gateway within 1 s (long poll), with the issuer keys', async () => {
    let jwks: { keys: Record<string, unknown>[] } | undefined;
    const feed = follow({ onJwks: (k) => (jwks = k) });
    await feed.start();
    expect(feed.healthy()).toBe(true);
    const t = (await getToken(server, clients.svc)).access_token;
    expect(jwks?.keys.map((k) => k.kid)).toContain(kidOf(t));
    const c = claimsOf(t);
    const identity = {
      jti: String(c.jti),
      iat: Number(c.iat),
      client_id: String(c.client_id),
      sub: String(c.sub),
      kid: String(kidOf(t)),
    };
    expect(feed.set.check(identity)).toBeUndefined();
    await sleep(300); // the client is now waiting in a long poll
    expect((await revoke(server, clients.svc, t)).status).toBe(200);
    const t0 = performance.now();
    while (!feed.set.check(identity)) {
      if (performance.now() - t0 > 2000) throw new Error('the revocation did not arrive');
      await sleep(5);
    }
    const ms = performance.now() - t0;
    console.log(`[revocation-feed-remote] /revoke -> gateway set: ${ms.toFixed(1)} ms after the /revoke answer`);
    expect(ms).toBeLessThan(1000);
  });

  it('an emergency key rotation reaches the gateway: the kid is revoked and the JWKS replaced', async () => {
    let jwks: { keys: Record<string, unknown>[] } | undefined;
    const feed = follow({ onJwks: (k) => (jwks = k) });
    await feed.start();
    const t = (await getToken(server, clients.svc)).access_token;
    const oldKid = String(kidOf(t));
    const r = await server.cli(['keys', 'rotate', '--emergency', '--reason', 'feed test']);
    expect(r.code, r.stderr).toBe(0);
    const c = claimsOf(t);
    const identity = { jti: String(c.jti), iat: Number(c.iat), client_id: 'svc', sub: String(c.sub), kid: oldKid };
    const t0 = performance.now();
    while (!feed.set.check(identity) || jwks?.keys.some((k) => k.kid === oldKid)) {
      if (performance.now() - t0 > 3000) throw new Error('the key revocation did not arrive');
      await sleep(10);
    }
    console.log(`[revocation-feed-remote] emergency rotation -> gateway: ${(performance.now() - t0).toFixed(1)} ms`);
  });

  it('fails closed once the server is unreachable longer than the bound, and reconciles when it is back', async () => {
    const feed = follow({ maxFeedLagMs: 1000 });
    await feed.start();
    expect(feed.healthy()).toBe(true);
    await server.stop();
    const t0 = performance.now();
    while (feed.healthy()) {
      if (performance.now() - t0 > 5000) throw new Error('the feed never reported itself down');
      await sleep(20);
    }
    expect(feed.feedDownSince).toBeDefined();
    // A revocation written while the gateway could not read the feed (the CLI writes the table directly).
    const t = (
      await (async () => {
        await server.restart();
        return getToken(server, clients.svc);
      })()
    ).access_token;
    const c = claimsOf(t);
    const identity = {
      jti: String(c.jti),
      iat: Number(c.iat),
      client_id: 'svc',
      sub: String(c.sub),
      kid: String(kidOf(t)),
    };
    expect((await server.cli(['revoke', '--jti', String(c.jti)])).code).toBe(0);
    const t1 = performance.now();
    while (!feed.healthy() || !feed.set.check(identity)) {
      if (performance.now() - t1 > 5000) throw new Error('the feed did not come back');
      await sleep(20);
    }
    expect(feed.feedDownSince).toBeUndefined();
  });
});
