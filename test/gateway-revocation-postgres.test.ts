/**
 * Issue 5, item 5, at the gateway: two Portcullis processes sharing one PostgreSQL database; node B runs a
 * gateway in front of a real upstream. A revocation made through node A must be refused at node B's gateway
 * within 1 s. Polling is off (revocation.poll_interval: 0), so only the bus (LISTEN/NOTIFY) can carry it; the
 * gateway is asked every 10 ms from the moment node A answered, and the delay is printed.
 * Skipped loudly without PORTCULLIS_TEST_POSTGRES_URL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEvents } from './helpers/db.ts';
import { bearer, call, startUpstream, type Upstream } from './helpers/gateway.ts';
import { API, baseConfig, claimsOf, getToken, revoke } from './helpers/oauth.ts';
import {
  createPostgresDatabase,
  freePort,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  randomKek,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';

const available = postgresAvailable('gateway-revocation-postgres.test.ts');
const d = available ? describe : describe.skip;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

d(
  `revocation through node A, refused at node B's gateway (PostgreSQL)${available ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`,
  () => {
    let db: TestDatabase;
    let a: RunningServer;
    let b: RunningServer;
    let upstream: Upstream;
    let gw: string;
    const { config: base, clients } = baseConfig();

    /** Asks node B's gateway every 10 ms until it refuses the token (401); returns the milliseconds it took. */
    async function msUntilRefused(token: string): Promise<number> {
      const t0 = performance.now();
      for (;;) {
        const r = await call(gw, '/orders/1', { headers: bearer(token) });
        const elapsed = performance.now() - t0;
        if (r.status === 401) return elapsed;
        expect(r.status, r.text).toBe(200);
        if (elapsed > 3000) throw new Error(`still allowed at node B's gateway after ${Math.round(elapsed)} ms`);
        await sleep(10);
      }
    }

    beforeAll(async () => {
      db = await createPostgresDatabase(POSTGRES_URL);
      upstream = await startUpstream();
      const gwPort = await freePort();
      gw = `http://127.0.0.1:${gwPort}`;
      const config = {
        ...base,
        issuer: 'https://auth.example.test',
        revocation: { poll_interval: 0, max_feed_lag: '2s' },
      };
      const env = { PORTCULLIS_KEK: randomKek() };
      a = await startServer(config, { storageUrl: db.url, env });
      b = await startServer(
        {
          ...config,
          gateway: {
            listen: { host: '127.0.0.1', port: gwPort },
            routes: [
              {
                name: 'orders',
                path_prefix: '/orders',
                upstream: upstream.url,
                resource: API,
                scopes: { GET: ['orders:read'] },
              },
            ],
          },
        },
        { storageUrl: db.url, env },
      );
    });
    afterAll(async () => {
      await a?.close();
      await b?.close();
      await upstream?.close();
      await db?.drop();
    });

    it('a token revoked at node A (/revoke) is refused at node B’s gateway within 1 s', async () => {
      const t = (await getToken(a, clients.svc, { scope: 'orders:read' })).access_token;
      expect((await call(gw, '/orders/1', { headers: bearer(t) })).status).toBe(200);
      expect((await revoke(a, clients.svc, t)).status).toBe(200);
      const ms = await msUntilRefused(t);
      console.log(`[gateway-revocation-postgres] /revoke at node A -> 401 at node B's gateway: ${ms.toFixed(1)} ms`);
      expect(ms).toBeLessThan(1000);
      const denied = await readEvents(b, "WHERE type = 'gateway.denied' AND jti = $1", [String(claimsOf(t).jti)]);
      expect(denied.at(-1)?.data).toMatchObject({ reason: 'revoked', route: 'orders' });
    });

    it('a client revoked with the CLI through node A is refused at node B’s gateway within 1 s', async () => {
      const t = (await getToken(a, clients.svc, { scope: 'orders:read' })).access_token;
      expect((await call(gw, '/orders/1', { headers: bearer(t) })).status).toBe(200);
      const r = await a.cli(['revoke', '--client', 'svc', '--reason', 'gateway bus test']);
      expect(r.code, r.stderr).toBe(0);
      const ms = await msUntilRefused(t);
      console.log(
        `[gateway-revocation-postgres] CLI revoke --client via node A -> 401 at node B's gateway: ${ms.toFixed(1)} ms`,
      );
      expect(ms).toBeLessThan(1000);
    });
  },
);
