/**
 * The DPoP proof jti replay cache in Redis (redis.url), against a real Redis: two server processes that share only
 * Redis (each has its own SQLite database) refuse a proof at the second node that was used at the first, which
 * the database table alone could not do. Skipped loudly without PORTCULLIS_TEST_REDIS_URL.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisReplayStore } from '../src/storage/redis/replay-store.ts';
import { query } from './helpers/db.ts';
import { baseConfig, type HttpResult, postForm } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

const REDIS_URL = process.env.PORTCULLIS_TEST_REDIS_URL;
if (!REDIS_URL)
  console.warn(
    '\n*** SKIPPING dpop-redis.test.ts: PORTCULLIS_TEST_REDIS_URL is not set ' +
      '(e.g. PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:6379 npm test) ***\n',
  );
const d = REDIS_URL ? describe : describe.skip;
const prefix = () => `portcullis-test-${randomBytes(6).toString('hex')}:`;

/** Both nodes announce the same issuer (they stand behind one name), so a proof's htu fits either. */
const ISSUER = 'https://as.example.com';

d(
  `two nodes sharing Redis share the DPoP replay cache${REDIS_URL ? '' : ' (SKIPPED: PORTCULLIS_TEST_REDIS_URL is not set)'}`,
  () => {
    let a: RunningServer;
    let b: RunningServer;
    let keyPrefix: string;
    const base = baseConfig();
    const svc = base.clients.svc;
    beforeAll(async () => {
      keyPrefix = prefix();
      const config = { ...base.config, issuer: ISSUER, redis: { url: REDIS_URL, key_prefix: keyPrefix } };
      [a, b] = await Promise.all([startServer(config), startServer(config)]);
    });
    afterAll(async () => {
      await Promise.all([a?.close(), b?.close()]);
    });

    type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

    async function proof(k: KeyPair, s: RunningServer): Promise<string> {
      const iat = Math.floor((await s.advanceClock(0)).now_ms / 1000);
      return new SignJWT({ htm: 'POST', htu: `${ISSUER}/token`, jti: randomUUID(), iat })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(k.publicKey) })
        .sign(k.privateKey);
    }

    function tokenWith(s: RunningServer, dpop: string): Promise<HttpResult> {
      return postForm(
        `${s.url}/token`,
        { grant_type: 'client_credentials', scope: 'orders:read' },
        { basic: [svc.client_id, svc.client_secret], headers: { dpop } },
      );
    }

    it('a proof used at one node is refused at the other (replayed jti)', async () => {
      const k = await generateKeyPair('ES256');
      const p = await proof(k, a);
      const first = await tokenWith(a, p);
      expect(first.status, first.text).toBe(200);
      expect(first.json?.token_type).toBe('DPoP');
      const replay = await tokenWith(b, p);
      expect(replay.status, replay.text).toBe(400);
      expect(replay.json).toMatchObject({ error: 'invalid_dpop_proof' });
      expect(replay.json?.error_description).toMatch(/already used/);
      // The other node works with a fresh proof of the same key.
      const fresh = await tokenWith(b, await proof(k, b));
      expect(fresh.status, fresh.text).toBe(200);
    });

    it('the jti is kept in Redis for the iat window (plus skew), and not written to the database', async () => {
      const k = await generateKeyPair('ES256');
      const redis = new Redis(REDIS_URL!);
      try {
        const before = await redis.keys(`${keyPrefix}once:dpop:*`);
        expect((await tokenWith(a, await proof(k, a))).status).toBe(200);
        const after = await redis.keys(`${keyPrefix}once:dpop:*`);
        const added = after.filter((x) => !before.includes(x));
        expect(added).toHaveLength(1);
        const ttl = await redis.pttl(added[0]!);
        // dpop.iat_window (60 s) + tokens.clock_skew (30 s) after the proof's iat: at most 90 s.
        expect(ttl).toBeGreaterThan(30_000);
        expect(ttl).toBeLessThanOrEqual(90_000);
      } finally {
        redis.disconnect();
      }
      const rows = await query(a, "SELECT key FROM used_once WHERE key LIKE 'dpop:%'");
      expect(rows).toEqual([]);
    });
  },
);

d(`RedisReplayStore${REDIS_URL ? '' : ' (SKIPPED)'}`, () => {
  const now = 1_700_000_000_000;
  const clock = { nowMs: () => now };

  it('once per key until it expires, across two connections', async () => {
    const fallback = { useOnce: async () => true };
    const p = prefix();
    const x = new RedisReplayStore(REDIS_URL!, { prefix: p, clock, fallback });
    const y = new RedisReplayStore(REDIS_URL!, { prefix: p, clock, fallback });
    await Promise.all([x.ready(), y.ready()]);
    try {
      const results = await Promise.all([x.useOnce('k', now + 60_000), y.useOnce('k', now + 60_000)]);
      expect(results.sort()).toEqual([false, true]);
      expect(await x.useOnce('other', now + 60_000)).toBe(true);
      expect(await y.useOnce('short', now + 1)).toBe(true);
      await new Promise((r) => setTimeout(r, 20)); // Redis's own clock expires the key (1 ms time to live)
      expect(await x.useOnce('short', now + 60_000)).toBe(true);
    } finally {
      await x.close();
      await y.close();
    }
  });

  it('falls back to the database store when Redis is unreachable (the check never switches off)', async () => {
    const seen = new Set<string>();
    const fallback = {
      useOnce: async (key: string) => {
        if (seen.has(key)) return false;
        seen.add(key);
        return true;
      },
    };
    const dead = new RedisReplayStore('redis://127.0.0.1:1', { prefix: prefix(), clock, fallback });
    try {
      expect(await dead.useOnce('j', now + 60_000)).toBe(true);
      expect(await dead.useOnce('j', now + 60_000)).toBe(false);
      expect(seen.has('j')).toBe(true);
    } finally {
      await dead.close();
    }
  });
});
