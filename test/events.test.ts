import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEvents } from './helpers/db.ts';
import {
  BILLING,
  baseConfig,
  claimsOf,
  getToken,
  jwksKids,
  kidOf,
  postForm,
  revoke,
  type TestClient,
} from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

let server: RunningServer;
const base = baseConfig();
const { svc, poster, multi } = base.clients;
const issuedTokens: string[] = [];

beforeAll(async () => {
  server = await startServer(base.config);
});
afterAll(async () => {
  await server?.close();
});

async function issueVia(c: TestClient, params: Record<string, string> = {}, post = false): Promise<string> {
  if (!post) return (await getToken(server, c, params)).access_token;
  const r = await postForm(`${server.url}/token`, {
    grant_type: 'client_credentials',
    client_id: c.client_id,
    client_secret: c.client_secret,
    ...params,
  });
  if (r.status !== 200) throw new Error(r.text);
  return String(r.json!.access_token);
}

describe('token.issued', () => {
  it('every issued jti has exactly one token.issued event, readable as soon as the token is returned', async () => {
    const N = 12;
    const mine: string[] = [];
    for (let i = 0; i < N; i++) {
      const t =
        i % 3 === 0
          ? await issueVia(svc, { scope: 'orders:read' })
          : i % 3 === 1
            ? await issueVia(poster, {}, true)
            : await issueVia(multi, { resource: BILLING });
      mine.push(t);
    }
    // Concurrent issuance too (group commit must not lose or duplicate records).
    mine.push(...(await Promise.all(Array.from({ length: 8 }, () => issueVia(svc)))));
    issuedTokens.push(...mine);

    // No polling: "no token without its record" means the event is committed before the response.
    const events = await readEvents(server, "WHERE type = 'token.issued'");
    for (const t of mine) {
      const c = claimsOf(t);
      const matching = events.filter((e) => e.jti === c.jti);
      expect(matching, `events for jti ${c.jti}`).toHaveLength(1);
      const e = matching[0]!;
      expect(e.client_id).toBe(c.client_id);
      expect(e.subject).toBe(c.sub);
      const aud = Array.isArray(e.data.aud) ? e.data.aud : [e.data.aud];
      expect(aud).toEqual(Array.isArray(c.aud) ? c.aud : [c.aud]);
      expect(e.data.scope).toBe(c.scope);
      expect(e.data.exp).toBe(c.exp);
      expect(e.data.kid).toBe(kidOf(t));
      expect(Math.abs(e.at - c.iat! * 1000)).toBeLessThan(2000);
      // The record never holds the token itself.
      expect(JSON.stringify(e)).not.toContain(t);
      expect(JSON.stringify(e)).not.toContain(t.split('.')[2]!);
    }
    const ids = events.map((e) => e.id);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('a refused token request writes no token.issued event', async () => {
    const before = (await readEvents(server, "WHERE type = 'token.issued'")).length;
    const r = await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials', scope: 'invoices:read' },
      { basic: [svc.client_id, svc.client_secret] },
    );
    expect(r.json?.error).toBe('invalid_scope');
    expect((await readEvents(server, "WHERE type = 'token.issued'")).length).toBe(before);
  });
});

describe('client_auth.failed', () => {
  it('is written on a bad secret (Basic), naming the client and never the secret', async () => {
    const wrong = 'wrong-secret-value-123456';
    const before = await readEvents(server, "WHERE type = 'client_auth.failed'");
    const r = await postForm(`${server.url}/token`, { grant_type: 'client_credentials' }, { basic: ['svc', wrong] });
    expect(r.status).toBe(401);
    const after = await readEvents(server, "WHERE type = 'client_auth.failed'");
    expect(after.length).toBe(before.length + 1);
    const e = after[after.length - 1]!;
    expect(e.client_id).toBe('svc');
    expect(JSON.stringify(e)).not.toContain(wrong);
    expect(JSON.stringify(e)).not.toContain(svc.client_secret);
  });

  it('is written on a bad secret via client_secret_post and for an unknown client', async () => {
    const before = (await readEvents(server, "WHERE type = 'client_auth.failed'")).length;
    await postForm(`${server.url}/token`, {
      grant_type: 'client_credentials',
      client_id: 'poster',
      client_secret: 'nope-nope-nope-nope',
    });
    await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials' },
      { basic: ['ghost', 'nope-nope-nope-nope'] },
    );
    const after = await readEvents(server, "WHERE type = 'client_auth.failed'");
    expect(after.length).toBe(before + 2);
    expect(after.slice(-2).some((e) => e.client_id === 'poster')).toBe(true);
    for (const e of after) expect(JSON.stringify(e)).not.toContain('nope-nope-nope-nope');
  });
});

describe('token.revoked', () => {
  it('is written on revoke, with the jti', async () => {
    const t = await issueVia(svc);
    const jti = String(claimsOf(t).jti);
    expect((await revoke(server, svc, t)).status).toBe(200);
    const events = await readEvents(server, "WHERE type = 'token.revoked'");
    const mine = events.filter((e) => e.jti === jti);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.client_id).toBe('svc');
    expect(JSON.stringify(mine[0])).not.toContain(t);
  });

  it("is not written when a client tries to revoke someone else's token", async () => {
    const t = await issueVia(svc);
    const jti = String(claimsOf(t).jti);
    expect((await revoke(server, base.clients.apiRs, t)).status).toBe(200);
    const events = await readEvents(server, "WHERE type = 'token.revoked'");
    expect(events.filter((e) => e.jti === jti)).toHaveLength(0);
  });

  it('is written by `revoke --client` from the cli', async () => {
    const r = await server.cli(['revoke', '--client', 'poster', '--reason', 'compromised']);
    expect(r.code, r.stderr).toBe(0);
    const events = await readEvents(server, "WHERE type = 'token.revoked'");
    expect(events.some((e) => e.client_id === 'poster' && e.actor === 'cli')).toBe(true);
  });
});

describe('key.* events', () => {
  it('startup recorded the first key', async () => {
    const [kid] = await jwksKids(server);
    const events = await readEvents(server, "WHERE type LIKE 'key.%'");
    expect(events.some((e) => e.type === 'key.created' && e.data.kid === kid)).toBe(true);
  });

  // The cli runs on the real clock while the server's test clock may be ahead: do the emergency rotation before
  // any advanceClock so both agree on which key signs.
  it('emergency rotation (cli) records key.created, key.activated for the new key and key.revoked for the old', async () => {
    const [kid1] = await jwksKids(server);
    const mark = (await readEvents(server)).length;
    const em = await server.cli(['keys', 'rotate', '--emergency', '--reason', 'suspected leak']);
    expect(em.code, em.stderr).toBe(0);
    const kid2 = kidOf(await issueVia(svc))!;
    expect(kid2).not.toBe(kid1);
    const events = (await readEvents(server)).slice(mark).filter((e) => e.type.startsWith('key.'));
    expect(
      events.some((e) => e.type === 'key.created' && e.data.kid === kid2 && e.actor === 'cli'),
      JSON.stringify(events),
    ).toBe(true);
    expect(events.some((e) => e.type === 'key.activated' && e.data.kid === kid2)).toBe(true);
    const revoked = events.find((e) => e.type === 'key.revoked');
    expect(revoked, JSON.stringify(events)).toBeDefined();
    expect(revoked!.data.kid).toBe(kid1);
    expect(JSON.stringify(revoked!.data)).toContain('suspected leak');
  });

  it('normal rotation (cli) records key.created; the scheduler records key.activated when it starts signing', async () => {
    const [current] = await jwksKids(server);
    const mark = (await readEvents(server)).length;
    const r = await server.cli(['keys', 'rotate']);
    expect(r.code, r.stderr).toBe(0);
    const kidNew = (await jwksKids(server)).find((k) => k !== current)!;
    expect(kidNew).toBeDefined();
    let events = (await readEvents(server)).slice(mark);
    expect(events.some((e) => e.type === 'key.created' && e.data.kid === kidNew && e.actor === 'cli')).toBe(true);
    expect(events.some((e) => e.type === 'key.activated' && e.data.kid === kidNew)).toBe(false);

    await server.advanceClock(601); // default jwks_max_age 10m
    expect(kidOf(await issueVia(svc))).toBe(kidNew);
    events = (await readEvents(server)).slice(mark);
    expect(
      events.some((e) => e.type === 'key.activated' && e.data.kid === kidNew),
      JSON.stringify(events),
    ).toBe(true);
  });
});

describe('events never hold secrets', () => {
  it('no client secret and no issued access token appears anywhere in the events table', async () => {
    const all = JSON.stringify(await readEvents(server));
    for (const c of Object.values(base.clients)) expect(all).not.toContain(c.client_secret);
    for (const t of issuedTokens) expect(all).not.toContain(t.split('.')[2]!);
  });
});
