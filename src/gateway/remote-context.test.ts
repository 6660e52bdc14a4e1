import { generateKeyPairSync } from 'node:crypto';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { buildConfig } from '../config/load.ts';
import { createMetrics } from '../http/metrics.ts';
import { systemClock } from '../lib/clock.ts';
import { MemoryLimiter } from '../lib/rate-limiter.ts';
import type { GroupCommitter } from '../storage/group-commit.ts';
import type { Storage } from '../storage/ports.ts';
import { RemoteGatewaySource, RemoteKeys } from './remote-context.ts';

function publicJwk(kid: string): Record<string, unknown> {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
}

const JWKS = { keys: [publicJwk('k1')] };
const page = (revocations: unknown[], lastId: number, more: boolean) =>
  new Response(JSON.stringify({ revocations, last_id: lastId, more, jwks: JWKS }), { status: 200 });
const rev = (id: number) => ({
  id,
  kind: 'jti',
  value: `jti-${id}`,
  revoked_at: Date.now(),
  expires_at: Date.now() + 600_000,
  reason: 'test',
});

/** A feed whose answers the test releases: each request waits on the next gate. */
function scriptedFetch() {
  const calls: URL[] = [];
  const gates: Array<(r: Response) => void> = [];
  const fetchFn = ((input: URL, init?: RequestInit) => {
    calls.push(new URL(String(input)));
    return new Promise<Response>((resolve, reject) => {
      gates.push(resolve);
      init?.signal?.addEventListener('abort', () => reject(new Error('aborted')));
    });
  }) as unknown as typeof fetch;
  const answer = async (r: Response) => {
    for (let i = 0; i < 200 && gates.length === 0; i++) await new Promise((x) => setTimeout(x, 5));
    const g = gates.shift();
    if (!g) throw new Error('no request is waiting');
    g(r);
    await new Promise((x) => setTimeout(x, 20));
  };
  return { fetchFn, calls, answer };
}

function source(fetchFn: typeof fetch) {
  const config = buildConfig({
    revocation: { max_feed_lag: '5s' },
    gateway: { remote: { url: 'http://as.internal:9000/auth/', client_id: 'gw', client_secret: 'feed-secret' } },
  });
  const remote = config.gateway?.remote;
  if (!remote) throw new Error('no remote');
  return new RemoteGatewaySource({
    config,
    remote,
    clock: systemClock,
    storage: {} as Storage,
    events: { write: async () => {} } as unknown as GroupCommitter,
    limiter: new MemoryLimiter(systemClock),
    log: pino({ level: 'silent' }),
    metrics: createMetrics({ revocations: () => 0, eventsWritten: () => 0 }),
    fetch: fetchFn,
  });
}

describe('RemoteGatewaySource', () => {
  it('refuses until the whole revocation table was read, even once the JWKS has arrived', async () => {
    const f = scriptedFetch();
    const s = source(f.fetchFn);
    const started = s.start(10);
    await started;
    expect(s.ready()).toBe(false);
    expect(s.ctx.revocations.healthy(Date.now())).toBe(false); // the gateway answers 503 to every token
    // First page of a two-page table: the keys are known now, the revocations are not all read.
    await f.answer(page([rev(1)], 1, true));
    expect(s.keys.isTrustedKid('k1')).toBe(true);
    expect(s.ready()).toBe(false);
    expect(s.ctx.revocations.healthy(Date.now())).toBe(false);
    expect(f.calls[1]?.searchParams.get('after')).toBe('1');
    expect(f.calls[1]?.pathname).toBe('/auth/revocations'); // endpoints hang off the issuer's path
    await f.answer(page([rev(2)], 2, false));
    expect(s.ready()).toBe(true);
    expect(s.ctx.revocations.healthy(Date.now())).toBe(true);
    expect(s.ctx.revocations.size).toBe(2);
    // The issuer is the remote URL without trailing slash; the nonce key is not the KEK of any server.
    expect(s.ctx.config.issuer).toBe('http://as.internal:9000/auth');
    expect(s.ctx.kek.source).toBe('gateway.remote.client_secret');
    await s.close();
  });
});

describe('RemoteKeys', () => {
  it('keeps only public signing keys with an accepted alg, and forgets keys no longer published', () => {
    const k = new RemoteKeys();
    const priv = { ...publicJwk('p'), d: 'secret' };
    k.replace({
      keys: [
        publicJwk('a'),
        publicJwk('b'),
        priv,
        { kty: 'oct', k: 'c2VjcmV0', kid: 'h', alg: 'HS256' },
        { ...publicJwk('n'), alg: 'none' },
        { ...publicJwk('x'), alg: undefined },
      ],
    });
    expect(k.kids.sort()).toEqual(['a', 'b']);
    expect(k.publicJwk('a')?.alg).toBe('ES256');
    k.replace({ keys: [publicJwk('b')] });
    expect(k.isTrustedKid('a')).toBe(false);
    expect(k.publicJwk('a')).toBeUndefined();
    expect(k.isTrustedKid('b')).toBe(true);
  });
});
