import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  API,
  baseConfig,
  claimsOf,
  fetchJwks,
  getToken,
  introspect,
  jwksKids,
  kidOf,
  type TestClient,
  verifyAccessToken,
} from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

function configWith(keys: Record<string, unknown>) {
  const base = baseConfig();
  base.config.keys = keys;
  return base;
}

describe('JWKS caching', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(configWith({ jwks_max_age: '60s' }).config);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('Cache-Control: public, max-age=<jwks_max_age>', async () => {
    const res = await fetch(`${server.url}/jwks`);
    expect(res.status).toBe(200);
    const cc = res.headers.get('cache-control') ?? '';
    expect(cc).toMatch(/\bpublic\b/);
    expect(cc).toMatch(/\bmax-age=60\b/);
    expect(res.headers.get('content-type') ?? '').toMatch(/application\/(jwk-set\+)?json/);
  });

  it('JWKS holds public keys only, with kid, alg and use', async () => {
    const { keys } = await fetchJwks(server);
    expect(keys.length).toBe(1);
    for (const k of keys) {
      expect(k.kid).toEqual(expect.any(String));
      expect(k.alg).toBe('ES256');
      for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi'])
        expect(k, `private member ${priv}`).not.toHaveProperty(priv);
    }
  });
});

describe('scheduled rotation as a client sees it (rotation_period 1h, jwks_max_age 60s)', () => {
  let server: RunningServer;
  let svc: TestClient;
  let kid1: string;
  let kid2: string;
  let tokenA: string;
  /** The server's fake "now" in ms, as reported by the clock route. */
  let serverNow = Date.now();
  const advance = async (s: number) => {
    const r = await server.advanceClock(s);
    expect(r.now_ms).toEqual(expect.any(Number));
    serverNow = r.now_ms;
    return r;
  };
  const verifyAtServerTime = (t: string) =>
    verifyAccessToken(server, t, { audience: API, currentDate: new Date(serverNow) });

  beforeAll(async () => {
    const base = configWith({ rotation_period: '1h', jwks_max_age: '60s' });
    svc = base.clients.svc;
    server = await startServer(base.config);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('starts with one key; tokens carry it', async () => {
    const kids = await jwksKids(server);
    expect(kids).toHaveLength(1);
    kid1 = kids[0]!;
    const { access_token } = await getToken(server, svc);
    expect(kidOf(access_token)).toBe(kid1);
    const cc = (await fetch(`${server.url}/jwks`)).headers.get('cache-control') ?? '';
    expect(cc).toMatch(/max-age=60\b/);
  });

  it('before pre-publication (t+3300s) nothing changes; token A is signed by kid1', async () => {
    await advance(3300);
    expect(await jwksKids(server)).toEqual([kid1]);
    tokenA = (await getToken(server, svc)).access_token;
    expect(kidOf(tokenA)).toBe(kid1);
  });

  it('at pre-publication (t+3500s, i.e. within 2*max-age of rotation) the JWKS has 2 keys, new tokens still kid1', async () => {
    await advance(200);
    const kids = await jwksKids(server);
    expect(kids).toHaveLength(2);
    expect(kids).toContain(kid1);
    kid2 = kids.find((k) => k !== kid1)!;
    const { access_token } = await getToken(server, svc);
    expect(kidOf(access_token)).toBe(kid1);
  });

  it('past activation (t+3610s) new tokens carry kid2; token A still verifies and introspects active', async () => {
    await advance(110);
    const { access_token } = await getToken(server, svc);
    expect(kidOf(access_token)).toBe(kid2);
    await verifyAtServerTime(access_token);
    const kids = await jwksKids(server);
    expect(kids).toContain(kid1);
    expect(kids).toContain(kid2);
    const v = await verifyAtServerTime(tokenA);
    expect(v.kid).toBe(kid1);
    expect((await introspect(server, svc, tokenA)).json?.active).toBe(true);
  });

  it('token A stays active until it expires (t+3880s), then inactive (t+3910s)', async () => {
    await advance(270);
    expect((await introspect(server, svc, tokenA)).json?.active).toBe(true);
    await verifyAtServerTime(tokenA);
    await advance(30);
    const r = await introspect(server, svc, tokenA);
    expect(JSON.parse(r.text)).toStrictEqual({ active: false });
    // kid1 is still published: a token it signed could still be alive elsewhere in the skew window.
    expect(await jwksKids(server)).toContain(kid1);
  });

  it('after retention (ttl + skew after it stopped signing) kid1 leaves the JWKS', async () => {
    await advance(350);
    const kids = await jwksKids(server);
    expect(kids).not.toContain(kid1);
    expect(kids).toContain(kid2);
    const { access_token } = await getToken(server, svc);
    expect(kidOf(access_token)).toBe(kid2);
  });
});

describe('`keys rotate` (cli) while the server runs', () => {
  let server: RunningServer;
  let svc: TestClient;
  beforeAll(async () => {
    const base = configWith({ jwks_max_age: '60s' });
    svc = base.clients.svc;
    server = await startServer(base.config);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('publishes the new kid at once; it signs only after jwks_max_age', async () => {
    const [kid1] = await jwksKids(server);
    const before = await getToken(server, svc);
    expect(kidOf(before.access_token)).toBe(kid1);

    const r = await server.cli(['keys', 'rotate', '--reason', 'test rotation']);
    expect(r.code, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);

    const kids = await jwksKids(server);
    expect(kids).toHaveLength(2);
    const kid2 = kids.find((k) => k !== kid1)!;
    expect(kid2).toBeDefined();
    // Announced but not yet signing: clients may hold a JWKS up to max-age old.
    expect(kidOf((await getToken(server, svc)).access_token)).toBe(kid1);

    await server.advanceClock(61);
    const after = await getToken(server, svc);
    expect(kidOf(after.access_token)).toBe(kid2);
    await verifyAccessToken(server, after.access_token, { audience: API });
    // The earlier token is still good.
    expect((await introspect(server, svc, before.access_token)).json?.active).toBe(true);
  });

  it('`keys list` shows the keys', async () => {
    const kids = await jwksKids(server);
    const r = await server.cli(['keys', 'list']);
    expect(r.code, r.stderr).toBe(0);
    for (const k of kids) expect(r.stdout).toContain(k);

    const j = await server.cli(['keys', 'list', '--json']);
    expect(j.code, j.stderr).toBe(0);
    const parsed = JSON.parse(j.stdout) as unknown;
    const list = (Array.isArray(parsed) ? parsed : (parsed as { keys: unknown[] }).keys) as Array<
      Record<string, unknown>
    >;
    expect(Array.isArray(list)).toBe(true);
    for (const k of kids) {
      const entry = list.find((e) => e.kid === k);
      expect(entry, `kid ${k} in keys list --json`).toBeDefined();
      expect(entry!.state).toEqual(expect.stringMatching(/^(next|active|retiring)$/));
      expect(JSON.stringify(entry)).not.toMatch(/"d"\s*:/); // never the private key
    }
    expect(list.some((e) => e.state === 'active')).toBe(true);
  });
});

describe('emergency rotation (cli) while the server runs', () => {
  let server: RunningServer;
  let svc: TestClient;
  let apiRs: TestClient;
  beforeAll(async () => {
    const base = configWith({ jwks_max_age: '60s' });
    svc = base.clients.svc;
    apiRs = base.clients.apiRs;
    server = await startServer(base.config);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('new kid signs at once; old tokens are dead; old kid leaves the JWKS', async () => {
    const [kid1] = await jwksKids(server);
    const old = await getToken(server, svc);
    expect(kidOf(old.access_token)).toBe(kid1);
    expect((await introspect(server, svc, old.access_token)).json?.active).toBe(true);

    const r = await server.cli(['keys', 'rotate', '--emergency', '--reason', 'key leaked (test)']);
    expect(r.code, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(0);

    const fresh = await getToken(server, svc);
    const kid2 = kidOf(fresh.access_token);
    expect(kid2).toBeDefined();
    expect(kid2).not.toBe(kid1);
    await verifyAccessToken(server, fresh.access_token, { audience: API });

    for (const caller of [svc, apiRs]) {
      const ir = await introspect(server, caller, old.access_token);
      expect(JSON.parse(ir.text)).toStrictEqual({ active: false });
    }
    const kids = await jwksKids(server);
    expect(kids).not.toContain(kid1);
    expect(kids).toContain(kid2);
    await expect(verifyAccessToken(server, old.access_token, { audience: API })).rejects.toThrow();
  });

  it('also revokes a key that was pre-published before the incident', async () => {
    const before = await jwksKids(server);
    const r1 = await server.cli(['keys', 'rotate']);
    expect(r1.code, r1.stderr).toBe(0);
    const pending = (await jwksKids(server)).find((k) => !before.includes(k));
    expect(pending).toBeDefined();
    const r2 = await server.cli(['keys', 'rotate', '--emergency']);
    expect(r2.code, r2.stderr).toBe(0);
    expect(r2.stdout).toContain(pending as string);
    const after = await jwksKids(server);
    expect(after).toHaveLength(1);
    expect(after).not.toContain(pending);
    for (const k of before) expect(after).not.toContain(k);
    // Time passing does not bring the suspect key back into service.
    await server.advanceClock(3600);
    const t = await getToken(server, svc);
    expect(after).toContain(kidOf(t.access_token));
  });
});

describe.each([
  ['ES256', 'EC'],
  ['EdDSA', 'OKP'],
  ['PS256', 'RSA'],
  ['RS256', 'RSA'],
])('algorithm %s', (alg, kty) => {
  let server: RunningServer;
  let svc: TestClient;
  beforeAll(async () => {
    const base = configWith({ algorithm: alg });
    svc = base.clients.svc;
    server = await startServer(base.config);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('issues tokens that verify against the JWKS', async () => {
    const { keys } = await fetchJwks(server);
    expect(keys).toHaveLength(1);
    expect(keys[0]!.kty).toBe(kty);
    expect(keys[0]!.alg).toBe(alg);
    const { access_token } = await getToken(server, svc);
    const v = await verifyAccessToken(server, access_token, { audience: API });
    expect(v.alg).toBe(alg);
    expect(v.kid).toBe(keys[0]!.kid);
    expect(claimsOf(access_token).sub).toBe('svc');
    expect((await introspect(server, svc, access_token)).json?.active).toBe(true);
  });
});
