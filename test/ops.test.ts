import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sample } from './helpers/metrics.ts';
import { BILLING, baseConfig, basicAuth, getToken, introspect, postForm, revoke } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

let server: RunningServer;
const base = baseConfig();
const { svc, multi, poster } = base.clients;
const issued: string[] = [];

beforeAll(async () => {
  // Most verbose level: whatever the server logs at any level must still be free of secrets.
  server = await startServer({ ...base.config, log: { level: 'trace' } });
});
afterAll(async () => {
  await server?.close();
});

async function metrics(): Promise<string> {
  const res = await fetch(`${server.url}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type') ?? '').toMatch(/^text\/plain|openmetrics/);
  return res.text();
}

function labelNames(text: string): { client: string; grant: string } {
  const line = text.split('\n').find((l) => l.startsWith('portcullis_tokens_issued_total{'));
  expect(line, 'a portcullis_tokens_issued_total sample').toBeDefined();
  const client = /\bclient_id="/.test(line!) ? 'client_id' : 'client';
  const grant = /\bgrant_type="/.test(line!) ? 'grant_type' : 'grant';
  expect(line).toMatch(new RegExp(`\\b${client}="svc"`));
  expect(line).toMatch(new RegExp(`\\b${grant}="client_credentials"`));
  return { client, grant };
}

describe('health', () => {
  it('/healthz and /readyz answer 200', async () => {
    for (const p of ['/healthz', '/readyz']) {
      const res = await fetch(`${server.url}${p}`);
      expect(res.status, p).toBe(200);
    }
  });
});

describe('/metrics', () => {
  it('portcullis_tokens_issued_total counts tokens by client and grant', async () => {
    // Make sure the series exists, then learn its label names: the interface does not fix them, so accept
    // client|client_id and grant|grant_type.
    await getToken(server, svc);
    const names = labelNames(await metrics());
    const labelsSvc = { [names.client]: 'svc', [names.grant]: 'client_credentials' };
    const labelsMulti = { [names.client]: 'multi', [names.grant]: 'client_credentials' };
    const now = await metrics();
    const svc0 = sample(now, 'portcullis_tokens_issued_total', labelsSvc);
    const multi0 = sample(now, 'portcullis_tokens_issued_total', labelsMulti);
    expect(svc0).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) issued.push((await getToken(server, svc)).access_token);
    issued.push((await getToken(server, multi, { resource: BILLING })).access_token);
    // A refused request is not an issued token.
    await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials', scope: 'invoices:read' },
      { basic: [svc.client_id, svc.client_secret] },
    );

    const after = await metrics();
    expect(after).toMatch(/# TYPE portcullis_tokens_issued_total counter/);
    expect(sample(after, 'portcullis_tokens_issued_total', labelsSvc) - svc0, after.slice(0, 3000)).toBe(3);
    expect(sample(after, 'portcullis_tokens_issued_total', labelsMulti) - multi0).toBe(1);
  });

  it('has a latency histogram that counts requests', async () => {
    const text = await metrics();
    const histograms = [...text.matchAll(/^# TYPE (portcullis_\w+) histogram$/gm)]
      .map((m) => m[1]!)
      .filter((n) => !/^portcullis_(nodejs|process)_/.test(n));
    expect(histograms.length, 'a portcullis_* histogram').toBeGreaterThan(0);
    const h = histograms.find((n) => /duration|latency|seconds/.test(n)) ?? histograms[0]!;
    expect(text).toMatch(new RegExp(`^${h}_bucket\\{.*le="\\+Inf".*\\} \\d+`, 'm'));
    const count0 = sample(text, `${h}_count`, {});
    await getToken(server, svc);
    await getToken(server, svc);
    const count1 = sample(await metrics(), `${h}_count`, {});
    expect(count1).toBeGreaterThanOrEqual(count0 + 2);
  });

  it('never exposes secrets or tokens', async () => {
    const text = await metrics();
    for (const c of Object.values(base.clients)) expect(text).not.toContain(c.client_secret);
    for (const t of issued) expect(text).not.toContain(t);
  });
});

describe('logs', () => {
  it('are JSON lines on stdout', () => {
    const lines = server.logLines();
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.some((l) => l.msg === 'listening')).toBe(true);
  });

  it('at debug and below, every request gets one access-log line with its request id (and no credentials)', async () => {
    const res = await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials' },
      { basic: ['svc', svc.client_secret] },
    );
    expect(res.status).toBe(200);
    const id = res.headers.get('x-request-id');
    expect(id).toBeTruthy();
    await new Promise((r) => setTimeout(r, 300));
    const line = server.logLines().find((l) => l.msg === 'request' && l.request_id === id);
    expect(line, 'access-log line for the request').toBeDefined();
    expect(line).toMatchObject({ method: 'POST', route: '/token', status: 200 });
    expect(JSON.stringify(line)).not.toContain(svc.client_secret);
  });

  it('never contain a client secret, an Authorization header value, or an issued access token', async () => {
    // Exercise every path that might log: success, failures, introspection, revocation, post auth.
    const t = (await getToken(server, svc)).access_token;
    issued.push(t);
    const p = await postForm(`${server.url}/token`, {
      grant_type: 'client_credentials',
      client_id: 'poster',
      client_secret: poster.client_secret,
    });
    expect(p.status).toBe(200);
    issued.push(String(p.json!.access_token));
    await postForm(
      `${server.url}/token`,
      { grant_type: 'client_credentials' },
      { basic: ['svc', 'a-wrong-secret-that-must-not-be-logged'] },
    );
    await postForm(`${server.url}/token`, {
      grant_type: 'client_credentials',
      client_id: 'poster',
      client_secret: 'another-wrong-secret-not-logged',
    });
    await introspect(server, svc, t);
    await introspect(server, svc, 'garbage-token-value-not-logged');
    await revoke(server, svc, issued[0]!);
    await fetch(`${server.url}/token`, {
      method: 'POST',
      headers: { authorization: basicAuth('svc', svc.client_secret), 'content-type': 'application/json' },
      body: JSON.stringify({ client_secret: svc.client_secret }),
    });

    // Let the logger flush (pino writes asynchronously).
    await new Promise((r) => setTimeout(r, 300));
    const out = server.logs() + server.errors();
    expect(out.length).toBeGreaterThan(0);
    for (const c of Object.values(base.clients)) expect(out).not.toContain(c.client_secret);
    for (const tok of issued) {
      expect(out).not.toContain(tok);
      expect(out).not.toContain(tok.split('.')[2]!); // not even the signature
    }
    expect(out).not.toContain(basicAuth('svc', svc.client_secret).slice(6));
    expect(out).not.toContain('a-wrong-secret-that-must-not-be-logged');
    expect(out).not.toContain('another-wrong-secret-not-logged');
  });
});

describe('test clock route', () => {
  it('does not exist without PORTCULLIS_TEST_CLOCK', async () => {
    const s = await startServer(baseConfig().config, { testClock: false });
    try {
      const res = await fetch(`${s.url}/__test__/clock`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ advance_seconds: 10_000 }),
      });
      expect(res.status).toBe(404);
    } finally {
      await s.close();
    }
  });

  it('exists with it and reports the moved clock', async () => {
    const before = Date.now();
    const r = await server.advanceClock(100);
    expect(r.now_ms).toBeGreaterThanOrEqual(before + 100_000);
    expect(r.now_ms).toBeLessThan(Date.now() + 110_000);
    expect(Array.isArray(r.key_changes)).toBe(true);
  });
});
