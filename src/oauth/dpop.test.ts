/**
 * Unit tests of verifyDpopProof for the paths the gateway uses (ath, expectedJkt, method and URL of an API
 * request, nonces) and the htu normalisation. The token endpoint's use is tested black-box in test/dpop.test.ts.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { type Config, configSchema } from '../config/schema.ts';
import { InvalidDpopProof, UseDpopNonce } from '../errors/oauth-error.ts';
import { Kek } from '../keys/kek.ts';
import { OffsetClock } from '../lib/clock.ts';
import type { Storage } from '../storage/ports.ts';
import {
  currentDpopNonce,
  type DpopContext,
  dpopAth,
  isValidDpopNonce,
  normalizeHtu,
  verifyDpopProof,
} from './dpop.ts';

function context(dpop: Record<string, unknown> = {}, kekBytes = randomBytes(32)): DpopContext & { clock: OffsetClock } {
  const used = new Map<string, number>();
  const replay = {
    async useOnce(key: string, expiresAt: number) {
      if (used.has(key)) return false;
      used.set(key, expiresAt);
      return true;
    },
    async purgeExpired() {
      return 0;
    },
  };
  const config = { ...configSchema.parse({ dpop }), issuer: 'https://as.example.com' } as Config;
  return {
    config,
    clock: new OffsetClock(),
    storage: { replay } as unknown as Storage,
    kek: new Kek(kekBytes, 'test'),
  };
}

const API_URL = 'https://api.example.com/orders/42';
const TOKEN = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';

async function setup() {
  const k = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(k.publicKey);
  const jkt = await calculateJwkThumbprint(jwk, 'sha256');
  const sign = (claims: Record<string, unknown> = {}) =>
    new SignJWT({
      htm: 'GET',
      htu: API_URL,
      jti: randomUUID(),
      iat: Math.floor(Date.now() / 1000),
      ath: dpopAth(TOKEN),
      ...claims,
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
      .sign(k.privateKey);
  return { jkt, sign };
}

const check = { method: 'GET', url: API_URL, accessToken: TOKEN } as const;

describe('verifyDpopProof (gateway use: ath and cnf.jkt)', () => {
  it('accepts a proof bound to the token (ath) made with the key the token names (expectedJkt)', async () => {
    const ctx = context();
    const { jkt, sign } = await setup();
    const proof = await sign();
    const r = await verifyDpopProof(ctx, { ...check, proof, expectedJkt: jkt });
    expect(r.jkt).toBe(jkt);
    expect(typeof r.jti).toBe('string');
  });

  it('ath: refused for another access token, and when missing', async () => {
    const ctx = context();
    const { jkt, sign } = await setup();
    await expect(
      verifyDpopProof(ctx, { ...check, proof: await sign(), expectedJkt: jkt, accessToken: `${TOKEN}x` }),
    ).rejects.toThrow(/ath/);
    await expect(
      verifyDpopProof(ctx, { ...check, proof: await sign({ ath: undefined }), expectedJkt: jkt }),
    ).rejects.toThrow(/ath/);
  });

  it('expectedJkt: a proof by another key than the one the token is bound to is refused', async () => {
    const ctx = context();
    const a = await setup();
    const b = await setup();
    const err = await verifyDpopProof(ctx, { ...check, proof: await b.sign(), expectedJkt: a.jkt }).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidDpopProof);
    expect(err.code).toBe('invalid_dpop_proof');
    expect(err.description).toMatch(/bound to/);
  });

  it('method and URL of the API request; the query is ignored', async () => {
    const ctx = context();
    const { jkt, sign } = await setup();
    await expect(
      verifyDpopProof(ctx, { ...check, method: 'POST', proof: await sign(), expectedJkt: jkt }),
    ).rejects.toThrow(/htm/);
    await expect(
      verifyDpopProof(ctx, {
        ...check,
        url: 'https://api.example.com/orders/43',
        proof: await sign(),
        expectedJkt: jkt,
      }),
    ).rejects.toThrow(/htu/);
    const r = await verifyDpopProof(ctx, { ...check, url: `${API_URL}?page=2`, proof: await sign(), expectedJkt: jkt });
    expect(r.jkt).toBe(jkt);
  });

  it('a jti is accepted once; missing and repeated headers are refused', async () => {
    const ctx = context();
    const { sign } = await setup();
    const proof = await sign();
    await verifyDpopProof(ctx, { ...check, proof });
    await expect(verifyDpopProof(ctx, { ...check, proof })).rejects.toThrow(/already used/);
    await expect(verifyDpopProof(ctx, { ...check, proof: undefined })).rejects.toThrow(/required/);
    await expect(verifyDpopProof(ctx, { ...check, proof: [await sign(), await sign()] })).rejects.toThrow(
      /exactly one/,
    );
    expect((await verifyDpopProof(ctx, { ...check, proof: [await sign()] })).jti).toBeTruthy();
  });

  it('iat outside dpop.iat_window is refused', async () => {
    const ctx = context({ iat_window: '10s' });
    const { sign } = await setup();
    const now = Math.floor(Date.now() / 1000);
    await expect(verifyDpopProof(ctx, { ...check, proof: await sign({ iat: now - 20 }) })).rejects.toThrow(/iat/);
    expect((await verifyDpopProof(ctx, { ...check, proof: await sign({ iat: now - 5 }) })).jti).toBeTruthy();
  });

  it('requireNonce: use_dpop_nonce with the current nonce; accepted with it; stale after two periods', async () => {
    const kekBytes = randomBytes(32);
    const ctx = context({ nonce_rotation: '30s' }, kekBytes);
    const { sign } = await setup();
    const err = await verifyDpopProof(ctx, { ...check, proof: await sign(), requireNonce: true }).catch((e) => e);
    expect(err).toBeInstanceOf(UseDpopNonce);
    expect(err.headers['dpop-nonce']).toBe(currentDpopNonce(ctx));
    const nonce = err.nonce as string;
    expect(isValidDpopNonce(ctx, nonce)).toBe(true);
    ctx.clock.advance(30_000);
    expect(isValidDpopNonce(ctx, nonce)).toBe(true);
    ctx.clock.advance(30_000);
    expect(isValidDpopNonce(ctx, nonce)).toBe(false);
    // Another node with the same KEK agrees on the nonce.
    const other = { ...context({ nonce_rotation: '30s' }, Buffer.from(kekBytes)), clock: ctx.clock };
    expect(currentDpopNonce(other)).toBe(currentDpopNonce(ctx));
    expect(currentDpopNonce({ ...context({ nonce_rotation: '30s' }), clock: ctx.clock })).not.toBe(
      currentDpopNonce(ctx),
    );
  });
});

describe('normalizeHtu (RFC 3986 §6.2.2)', () => {
  it('case of scheme and host, default port, dot segments, percent-encoding case; drops query and fragment', () => {
    expect(normalizeHtu('HTTPS://API.Example.com:443/a/./b/../c%2f?q=1#x')).toBe('https://api.example.com/a/c%2F');
    expect(normalizeHtu('https://api.example.com:8443/x')).toBe('https://api.example.com:8443/x');
    expect(normalizeHtu('ftp://example.com/x')).toBeUndefined();
    expect(normalizeHtu('/token')).toBeUndefined();
  });
});
