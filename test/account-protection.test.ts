/**
 * Account protection, black-box (issue 4, NIST SP 800-63B-4 §3.1.1.2 passwords and §3.2.2 rate limiting):
 * password rules and the blocklist at every place a password is set, no truncation, the per-account lock with
 * growing waits and its reset, password spraying from one address, per-IP and global request limits with 429 +
 * Retry-After, and unknown user / wrong password / locked account answering alike, in about the same time.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as toYaml } from 'yaml';
import { Browser, formFields, type Res } from './helpers/browser.ts';
import { readEvents } from './helpers/db.ts';
import { postForm } from './helpers/oauth.ts';
import {
  type ConfigObject,
  freePort,
  makeTempDir,
  type RunningServer,
  runPortcullis,
  startServer,
} from './helpers/server.ts';
import { ALICE, BOB, signInConfig } from './helpers/signin.ts';

/** 80 characters; its first 72 (bcrypt's limit) are a different password. */
const LONG = 'the quick brown fox jumps over the lazy dog while seventy-two bytes go unnoticed';
const CAROL = { username: 'carol', password: LONG };
const TIMED = Array.from({ length: 8 }, (_, i) => ({ username: `timed${i}`, password: `timed user ${i} passphrase` }));

const servers: RunningServer[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const s of servers) await s.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(over: (c: ConfigObject) => void): Promise<RunningServer> {
  const { config } = signInConfig();
  over(config);
  const s = await startServer(config);
  servers.push(s);
  return s;
}

/** One POST /login from `b` (a fresh form each time); the response. */
async function login(b: Browser, user: { username: string; password: string }): Promise<Res> {
  const page = await b.get('/login');
  return b.post('/login', { ...formFields(page.body, '/login'), ...user });
}

/** The page's error message. */
function message(body: string): string | undefined {
  return /<div class="error"[^>]*>([^<]*)</.exec(body)?.[1];
}

describe('passwords (NIST SP 800-63B-4 §3.1.1.2)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start((c) => {
      (c.users as ConfigObject[]).push(CAROL);
    });
  });

  const addUser = (name: string, password: string) =>
    runPortcullis(['users', 'add', name, '--password-stdin', '--config', server.configPath], {
      cwd: server.dir,
      env: server.env,
      input: `${password}\n`,
    });

  it('the CLI refuses short, common and context-derived passwords, with the reason', async () => {
    const short = await addUser('erin', 'fourteen chars');
    expect(short.code).not.toBe(0);
    expect(short.stderr).toContain('at least 15 characters');
    const common = await addUser('erin', 'qwerty123456789');
    expect(common.code).not.toBe(0);
    expect(common.stderr).toContain('common or breached');
    const own = await addUser('erin', 'Erin-Erin-2024!!');
    expect(own.code).not.toBe(0);
    expect(own.stderr).toContain('too close to "erin"');
    const service = await addUser('erin', 'example sign-in 12345');
    expect(service.code).not.toBe(0);
    expect(service.stderr).toContain('too close to "Example Sign-in"');
    // No composition rules: a long lower-case phrase is fine, and so is 256 characters (64 must be accepted).
    expect((await addUser('erin', 'plain lower case words only')).code).toBe(0);
    expect((await addUser('frank', `${'horse battery '.repeat(18)}staple`.slice(0, 256))).code).toBe(0);
    const tooLong = await addUser('gina', 'x'.repeat(100) + 'y'.repeat(157));
    expect(tooLong.stderr).toContain('at most 256');
  });

  it('set-password applies the same rules', async () => {
    const r = await runPortcullis(['users', 'set-password', 'alice', '--config', server.configPath], {
      cwd: server.dir,
      env: server.env,
      input: '1qaz2wsx3edc4rfv\n',
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('common or breached');
  });

  it('the whole password is verified: the first 72 characters of an 80-character password fail', async () => {
    expect(LONG.length).toBe(80);
    const b = new Browser(server.url);
    const cut = await login(b, { username: 'carol', password: LONG.slice(0, 72) });
    expect(cut.status).toBe(401);
    expect((await login(b, { username: 'carol', password: `${LONG}!` })).status).toBe(401);
    expect((await login(b, CAROL)).status).toBe(303);
  });

  it('Unicode is normalised (NFKC) before hashing and verifying', async () => {
    // "ﬁ" (U+FB01) and "fi" are one password after NFKC; so are full-width and ASCII digits.
    expect((await addUser('hana', 'ﬁne ｗｉｎｅ from 1988 cellars')).code).toBe(0);
    const b = new Browser(server.url);
    expect((await login(b, { username: 'hana', password: 'fine wine from 1988 cellars' })).status).toBe(303);
  });
});

describe('a password changed in the configuration', () => {
  it('is recorded as password.changed (actor config), once', async () => {
    const server = await start(() => {});
    const users = server.config.users as Array<{ username: string; password: string }>;
    users.find((u) => u.username === 'bob')!.password = 'bob now has another passphrase';
    writeFileSync(server.configPath, toYaml(server.config));
    await server.restart();
    const [ev] = await readEvents(server, "WHERE type = 'password.changed'");
    expect(ev).toMatchObject({ actor: 'config', data: { username: 'bob', by: 'config' } });
    const b = new Browser(server.url);
    expect((await login(b, { username: 'bob', password: 'bob now has another passphrase' })).status).toBe(303);
    expect((await readEvents(server, "WHERE type = 'password.changed'")).length).toBe(1);
  });
});

describe('seeded users obey the same rules', () => {
  async function startInvalid(config: ConfigObject) {
    const dir = makeTempDir();
    dirs.push(dir);
    const full = {
      listen: { host: '127.0.0.1', port: await freePort() },
      storage: { url: `sqlite:${join(dir, 'p.db')}` },
      keys: { kek_file: join(dir, 'kek') },
      ...config,
    };
    const path = join(dir, 'portcullis.yaml');
    writeFileSync(path, toYaml(full));
    return runPortcullis(['start', '--config', path], { cwd: dir, timeoutMs: 15_000 });
  }

  it('a configured user with a bad password stops start-up, naming the key', async () => {
    const r = await startInvalid({
      users: [
        { username: 'ok', password: 'a perfectly fine passphrase' },
        { username: 'weak', password: 'qwerty123456789' },
        { username: 'short', password: 'tangerine sky' },
      ],
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/users\[1\]\.password: the password is on a list of common or breached passwords/);
    expect(r.stderr).toMatch(/users\[2\]\.password: the password must be at least 15 characters/);
    expect(r.stderr).not.toContain('qwerty123456789');
  });

  it('with mfa.required the minimum is 8', async () => {
    const server = await start((c) => {
      c.mfa = { required: true };
      c.users = [{ username: 'ivy', password: 'tangerine sky' }];
    });
    const b = new Browser(server.url);
    expect((await login(b, { username: 'ivy', password: 'tangerine sky' })).status).toBe(303);
  });
});

describe('consecutive failures per account: growing waits, then a lock', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start((c) => {
      c.throttle = {
        delay_after: 3,
        delay_max: '4s',
        lock_after: 5,
        lock_duration: '15m',
        // High enough that these tests meet the account lock, not the per-address limit.
        login_failures_per_ip: { limit: 1000, window: '15m' },
      };
      (c.users as ConfigObject[]).push(...TIMED);
    });
  });
  const wrong = { username: 'alice', password: 'not the password at all' };

  it('waits grow from the delay_after-th failure; during a wait even the right password is refused', async () => {
    const b = new Browser(server.url);
    for (let i = 0; i < 3; i++) expect((await login(b, wrong)).status).toBe(401);
    // Third failure: 1 s to wait. The right password now gets the same answer as a wrong one.
    const waiting = await login(b, ALICE);
    expect(waiting.status).toBe(401);
    expect(message(waiting.body)).toBe('Wrong username or password.');
    await server.advanceClock(1);
    expect((await login(b, wrong)).status).toBe(401); // fourth: 2 s
    await server.advanceClock(1);
    expect((await login(b, ALICE)).status).toBe(401);
    await server.advanceClock(1);
    // The wait is over: the right password signs in and resets the count.
    expect((await login(b, ALICE)).status).toBe(303);
    const b2 = new Browser(server.url);
    expect((await login(b2, wrong)).status).toBe(401);
    expect((await login(b2, ALICE)).status).toBe(303);
    const failed = await readEvents(server, 'WHERE type = \'login.failed\' AND data LIKE \'%"username":"alice"%\'');
    expect(failed.map((e) => e.data.reason)).toEqual([
      'bad_password',
      'bad_password',
      'bad_password',
      'locked',
      'bad_password',
      'locked',
      'bad_password',
    ]);
    expect(failed.map((e) => e.data.failures)).toEqual([1, 2, 3, undefined, 4, undefined, 1]);
    const ok = await readEvents(server, "WHERE type = 'login.succeeded'");
    expect(ok[0]!.data).toMatchObject({ method: 'pwd', username: 'alice', previous_failures: 4, ip: '127.0.0.1' });
    expect(typeof ok[0]!.data.user_agent).toBe('string');
  });

  it('lock_after failures lock the account for lock_duration; it unlocks by itself afterwards', async () => {
    const b = new Browser(server.url);
    for (let i = 0; i < 5; i++) {
      expect((await login(b, { username: 'bob', password: 'a wrong guess' })).status).toBe(401);
      await server.advanceClock(5); // past each wait, so every attempt is checked
    }
    const [locked] = await readEvents(server, "WHERE type = 'account.locked'");
    expect(locked!.data).toMatchObject({ username: 'bob', failures: 5, ip: '127.0.0.1' });
    expect(locked!.subject).toBeTruthy();
    await server.advanceClock(14 * 60);
    const refused = await login(b, BOB);
    expect(refused.status).toBe(401);
    expect(message(refused.body)).toBe('Wrong username or password.');
    const [lockedAttempt] = await readEvents(
      server,
      'WHERE type = \'login.failed\' AND data LIKE \'%"reason":"locked"%\' AND data LIKE \'%"username":"bob"%\'',
    );
    expect(lockedAttempt!.data.locked_until).toBe(locked!.data.locked_until);
    await server.advanceClock(61);
    expect((await login(b, BOB)).status).toBe(303);
  });

  it('`portcullis users unlock` ends a lock at once (account.unlocked)', async () => {
    const b = new Browser(server.url);
    for (let i = 0; i < 5; i++) {
      await login(b, { username: 'bob', password: 'another wrong guess' });
      await server.advanceClock(5);
    }
    expect((await login(b, BOB)).status).toBe(401);
    const r = await server.cli(['users', 'unlock', 'bob']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('unlocked bob (5 failed attempt(s) forgotten)');
    expect((await login(b, BOB)).status).toBe(303);
    const [ev] = await readEvents(server, "WHERE type = 'account.unlocked'");
    expect(ev).toMatchObject({ actor: 'cli', data: { username: 'bob', failures: 5, was_locked: true } });
    expect((await server.cli(['users', 'unlock', 'bob'])).stdout).toContain('bob was not locked');
  });

  it('unknown user, wrong password and locked account: one answer, in about the same time', async () => {
    // A locked account to time as well.
    const lb = new Browser(server.url);
    for (let i = 0; i < 5; i++) {
      await login(lb, { username: 'timed7', password: 'wrong wrong wrong' });
      await server.advanceClock(5);
    }
    const b = new Browser(server.url);
    const timeOne = async (user: { username: string; password: string }) => {
      const page = await b.get('/login');
      const fields = formFields(page.body, '/login');
      const t0 = performance.now();
      const r = await b.post('/login', { ...fields, ...user });
      const ms = performance.now() - t0;
      expect(r.status).toBe(401);
      return { ms, body: r.body.replace(/value="[^"]*"/g, '') };
    };
    const unknown: number[] = [];
    const wrongPw: number[] = [];
    const lockedMs: number[] = [];
    const bodies = new Set<string>();
    // Interleaved, so load on the machine hits all three alike; each known user fails only once (no waits).
    for (let i = 0; i < 7; i++) {
      const u = await timeOne({ username: `nobody${i}`, password: 'some guess here' });
      const w = await timeOne({ username: `timed${i}`, password: 'some guess here' });
      const l = await timeOne({ username: 'timed7', password: 'some guess here' });
      unknown.push(u.ms);
      wrongPw.push(w.ms);
      lockedMs.push(l.ms);
      for (const x of [u, w, l]) bodies.add(x.body.replace(/nobody\d|timed\d/g, 'NAME'));
    }
    expect(bodies.size).toBe(1);
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    const [mu, mw, ml] = [median(unknown), median(wrongPw), median(lockedMs)];
    // Each refusal spends one argon2id verification (tens of milliseconds); without it an unknown user or a
    // locked account would answer in a few milliseconds.
    expect(mu / mw, `unknown ${mu} ms, wrong ${mw} ms`).toBeGreaterThan(0.6);
    expect(mu / mw, `unknown ${mu} ms, wrong ${mw} ms`).toBeLessThan(1.6);
    expect(ml / mw, `locked ${ml} ms, wrong ${mw} ms`).toBeGreaterThan(0.6);
    expect(ml / mw, `locked ${ml} ms, wrong ${mw} ms`).toBeLessThan(1.6);
  });
});

describe('rate limits by address and globally', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start((c) => {
      c.throttle = {
        login_failures_per_ip: { limit: 5, window: '15m' },
        login_per_ip: { limit: 12, window: '1m' },
        token_per_ip: { limit: 5, window: '1m' },
        introspect_per_ip: { limit: 5, window: '1m' },
        introspect_global: { limit: 8, window: '1m' },
        device_per_ip: { limit: 3, window: '1m' },
      };
      // Out of the way, so the request limit is what refuses below.
      c.device = { max_failures_per_session: 100, max_failures_per_ip: 100 };
      (c.users as ConfigObject[]).push(CAROL);
    });
  });

  it('password spraying from one address: failures across accounts are throttled (429 + Retry-After)', async () => {
    const sprayer = new Browser(server.url, { localAddress: '127.0.0.2' });
    for (const username of ['alice', 'bob', 'carol', 'dave', 'erin'])
      expect((await login(sprayer, { username, password: 'Summer2024!Summer' })).status).toBe(401);
    // Each account saw one failure: no account lock helps here. The address is now refused, even with a right
    // password, before any account is looked at.
    const refused = await login(sprayer, ALICE);
    expect(refused.status).toBe(429);
    const retry = Number(refused.headers.get('retry-after'));
    expect(retry).toBeGreaterThan(0);
    expect(retry).toBeLessThanOrEqual(15 * 60);
    expect(message(refused.body)).toMatch(/^Too many sign-in attempts\. Try again in \d+ (seconds?|minutes?)\.$/);
    expect((await login(sprayer, BOB)).status).toBe(429);
    // Another address is unaffected.
    expect((await login(new Browser(server.url), ALICE)).status).toBe(303);
    // One event per rule and key and window, not one per refused request.
    const hits = await readEvents(server, "WHERE type = 'rate_limit.hit'");
    expect(hits.map((h) => h.data)).toEqual([
      expect.objectContaining({ rule: 'login_failures_per_ip', key_kind: 'ip', ip: '127.0.0.2', limit: 5 }),
    ]);
    // After window/limit, one more attempt.
    await server.advanceClock(retry);
    expect((await login(sprayer, ALICE)).status).toBe(303);
  });

  it('sign-in attempts per address (throttle.login_per_ip), failed or not', async () => {
    const b = new Browser(server.url, { localAddress: '127.0.0.6' });
    let status = 0;
    let n = 0;
    while (n < 20) {
      n++;
      status = (await login(b, CAROL)).status;
      if (status !== 303) break;
    }
    expect(status).toBe(429);
    expect(n).toBe(13);
  });

  it('/token per address: 429 with Retry-After and an OAuth JSON error; other addresses unaffected', async () => {
    const { Agent, fetch: uf } = await import('undici');
    const agent = new Agent({ localAddress: '127.0.0.3' });
    const post = () =>
      uf(`${server.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'grant_type=client_credentials',
        dispatcher: agent,
      });
    for (let i = 0; i < 5; i++) expect((await post()).status).toBe(401);
    const r = await post();
    expect(r.status).toBe(429);
    expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(await r.json()).toEqual({
      error: 'temporarily_unavailable',
      error_description: 'too many requests: try again later',
    });
    expect((await postForm(`${server.url}/token`, { grant_type: 'client_credentials' })).status).toBe(401);
    const [hit] = await readEvents(server, "WHERE type = 'rate_limit.hit' AND data LIKE '%token_per_ip%'");
    expect(hit!.data).toMatchObject({ rule: 'token_per_ip', key_kind: 'ip', ip: '127.0.0.3' });
    await agent.close();
  });

  it('/introspect per address and globally', async () => {
    const { Agent, fetch: uf } = await import('undici');
    const agents = ['127.0.0.4', '127.0.0.5'].map((a) => new Agent({ localAddress: a }));
    const post = (i: number) =>
      uf(`${server.url}/introspect`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'token=x',
        dispatcher: agents[i],
      });
    for (let i = 0; i < 5; i++) expect((await post(0)).status).toBe(401);
    expect((await post(0)).status).toBe(429); // per address
    for (let i = 0; i < 3; i++) expect((await post(1)).status).toBe(401);
    const global = await post(1); // 8 counted globally
    expect(global.status).toBe(429);
    expect(Number(global.headers.get('retry-after'))).toBeGreaterThan(0);
    const [hit] = await readEvents(server, "WHERE type = 'rate_limit.hit' AND data LIKE '%introspect_global%'");
    expect(hit!.data).toMatchObject({ rule: 'introspect_global', key_kind: 'global' });
    for (const a of agents) await a.close();
  });

  it('the device verification page: code submissions per address (throttle.device_per_ip)', async () => {
    const b = new Browser(server.url, { localAddress: '127.0.0.9' });
    expect((await login(b, CAROL)).status).toBe(303);
    const submit = async () => {
      const page = await b.get('/device');
      return b.post('/device', { ...formFields(page.body, '/device'), user_code: 'BCDF-GHJK' });
    };
    for (let i = 0; i < 3; i++) expect((await submit()).status).toBe(400);
    const refused = await submit();
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(message(refused.body)).toMatch(/^Too many attempts\. Try again in \d+ seconds?\.$/);
  });
});
