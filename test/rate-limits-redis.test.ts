/**
 * Rate-limit counters in Redis (redis.url), against a real Redis: the limiter's contract with a fake clock, and
 * two server processes sharing their counters. Skipped loudly without PORTCULLIS_TEST_REDIS_URL.
 */
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { RedisLimiter } from '../src/storage/redis/rate-limiter.ts';
import { Browser, formFields } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { freePort, makeTempDir, type RunningServer, runPortcullis, startServer } from './helpers/server.ts';
import { ALICE, signInConfig } from './helpers/signin.ts';

const REDIS_URL = process.env.PORTCULLIS_TEST_REDIS_URL;
if (!REDIS_URL)
  console.warn(
    '\n*** SKIPPING rate-limits-redis.test.ts: PORTCULLIS_TEST_REDIS_URL is not set ' +
      '(e.g. PORTCULLIS_TEST_REDIS_URL=redis://127.0.0.1:6379 npm test) ***\n',
  );
const d = REDIS_URL ? describe : describe.skip;
const prefix = () => `portcullis-test-${randomBytes(6).toString('hex')}:`;

d(`RedisLimiter${REDIS_URL ? '' : ' (SKIPPED: PORTCULLIS_TEST_REDIS_URL is not set)'}`, () => {
  let now = 1_700_000_000_000;
  const clock = { nowMs: () => now };
  let a: RedisLimiter;
  let b: RedisLimiter;
  beforeAll(async () => {
    const p = prefix();
    a = new RedisLimiter(REDIS_URL!, { prefix: p, clock });
    b = new RedisLimiter(REDIS_URL!, { prefix: p, clock });
    await Promise.all([a.ready(), b.ready()]);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });
  const rule = { name: 'r', limit: 5, window: 900 };

  it('GCRA as in memory: a burst of limit, then one per window/limit; two clients share one counter', async () => {
    for (let i = 0; i < 3; i++) expect((await a.hit('k', rule)).allowed).toBe(true);
    for (let i = 0; i < 2; i++) expect((await b.hit('k', rule)).allowed).toBe(true);
    expect(await a.hit('k', rule)).toEqual({ allowed: false, retryAfter: 180 });
    expect((await b.check('k', rule)).allowed).toBe(false);
    expect((await a.hit('other', rule)).allowed).toBe(true);
    now += 180_000;
    expect((await b.check('k', rule)).allowed).toBe(true); // check counts nothing
    expect((await b.hit('k', rule)).allowed).toBe(true);
    expect((await a.hit('k', rule)).allowed).toBe(false);
    now += 900_000;
    for (let i = 0; i < 5; i++) expect((await a.hit('k', rule)).allowed).toBe(true);
  });

  it('limit 0 is off; fractional intervals are kept exactly enough', async () => {
    for (let i = 0; i < 50; i++) expect((await a.hit('z', { name: 'off', limit: 0, window: 1 })).allowed).toBe(true);
    const r = { name: 'frac', limit: 3, window: 1 };
    for (let i = 0; i < 3; i++) expect((await a.hit('f', r)).allowed).toBe(true);
    expect((await a.hit('f', r)).allowed).toBe(false);
    now += 334;
    expect((await a.hit('f', r)).allowed).toBe(true);
  });

  it('falls back to in-process counters when Redis is unreachable (throttling never switches off)', async () => {
    const dead = new RedisLimiter('redis://127.0.0.1:1', { prefix: prefix(), clock });
    const one = { name: 'one', limit: 1, window: 60 };
    expect((await dead.hit('x', one)).allowed).toBe(true);
    expect((await dead.hit('x', one)).allowed).toBe(false);
    await dead.close();
  });
});

d(`two server processes share counters through Redis${REDIS_URL ? '' : ' (SKIPPED)'}`, () => {
  let s1: RunningServer;
  let s2: RunningServer;
  beforeAll(async () => {
    const { config } = signInConfig();
    config.redis = { url: REDIS_URL, key_prefix: prefix() };
    config.throttle = {
      token_per_ip: { limit: 4, window: '1m' },
      login_failures_per_ip: { limit: 3, window: '15m' },
    };
    [s1, s2] = await Promise.all([startServer(config), startServer(config)]);
  });
  afterAll(async () => {
    await s1?.close();
    await s2?.close();
  });

  it('/token: requests on one node count against the limit on the other', async () => {
    const agent = new Agent({ localAddress: '127.0.0.7' });
    const post = (s: RunningServer) =>
      undiciFetch(`${s.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials',
        dispatcher: agent,
      });
    for (const s of [s1, s2, s1, s2]) expect((await post(s)).status).toBe(401);
    const r1 = await post(s1);
    const r2 = await post(s2);
    expect([r1.status, r2.status]).toEqual([429, 429]);
    expect(Number(r2.headers.get('retry-after'))).toBeGreaterThan(0);
    await agent.close();
  });

  it('password spraying spread over two nodes is still throttled per address', async () => {
    const on = (s: RunningServer) => new Browser(s.url, { localAddress: '127.0.0.8' });
    const attempt = async (s: RunningServer, user: { username: string; password: string }) => {
      const b = on(s);
      const page = await b.get('/login');
      return b.post('/login', { ...formFields(page.body, '/login'), ...user });
    };
    expect((await attempt(s1, { username: 'alice', password: 'spray spray spray' })).status).toBe(401);
    expect((await attempt(s2, { username: 'bob', password: 'spray spray spray' })).status).toBe(401);
    expect((await attempt(s1, { username: 'nobody', password: 'spray spray spray' })).status).toBe(401);
    const refused = await attempt(s2, ALICE);
    expect(refused.status).toBe(429);
    expect((await readEvents(s2, "WHERE type = 'rate_limit.hit'")).map((e) => e.data.rule)).toEqual([
      'login_failures_per_ip',
    ]);
    // The other address, on either node, signs in.
    const b = new Browser(s1.url);
    const page = await b.get('/login');
    expect((await b.post('/login', { ...formFields(page.body, '/login'), ...ALICE })).status).toBe(303);
  });
});

// Needs no Redis: a configured Redis that does not answer stops start-up instead of silently counting per node.
it('a configured but unreachable Redis stops start-up, naming redis.url', async () => {
  const dir = makeTempDir();
  try {
    const path = join(dir, 'portcullis.yaml');
    writeFileSync(
      path,
      toYaml({
        listen: { host: '127.0.0.1', port: await freePort() },
        storage: { url: `sqlite:${join(dir, 'p.db')}` },
        keys: { kek_file: join(dir, 'kek') },
        redis: { url: 'redis://127.0.0.1:1' },
      }),
    );
    const r = await runPortcullis(['start', '--config', path], { cwd: dir, timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('redis.url: Redis did not answer');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, 30_000);
