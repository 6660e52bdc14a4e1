import { describe, expect, it } from 'vitest';
import { gatewaySchema } from '../config/schema.ts';
import type { OAuthContext } from '../oauth/context.ts';
import { Denial } from './denial.ts';
import { authorizeRequest } from './policy.ts';
import { RouteTable } from './routes.ts';
import type { Credentials, GatewayToken } from './verify-token.ts';

const API = 'https://api.example.com';

function route(extra: Record<string, unknown> = {}) {
  const g = gatewaySchema.parse({
    routes: [{ path_prefix: '/a', upstream: 'http://u:1', resource: API, scopes: { GET: ['a:read'] }, ...extra }],
  });
  const r = new RouteTable(g, ['ES256']).routes[0];
  if (!r) throw new Error('no route');
  return r;
}

function ctx(opts: { trusted?: boolean; revoked?: boolean } = {}): OAuthContext {
  return {
    keys: { isTrustedKid: () => opts.trusted ?? true },
    revocations: { check: () => (opts.revoked ? { id: 1 } : undefined) },
  } as unknown as OAuthContext;
}

const NOW = 1_800_000_000_000;
function token(extra: Partial<GatewayToken> = {}): GatewayToken {
  return {
    jti: 'j1',
    sub: 's1',
    clientId: 'c1',
    scope: 'a:read',
    scopes: new Set(['a:read']),
    aud: [API],
    exp: NOW / 1000 + 60,
    iat: NOW / 1000 - 10,
    nbf: undefined,
    kid: 'k1',
    grantId: undefined,
    jkt: undefined,
    ...extra,
  };
}
const bearerCred: Credentials = { scheme: 'bearer', token: 't', proof: undefined };

function reason(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof Denial) return e.reason;
    throw e;
  }
}

const check = (c: OAuthContext, t: GatewayToken, r = route(), cred = bearerCred, method = 'GET', now = NOW) =>
  reason(() => authorizeRequest(c, r, t, cred, { method, url: 'http://gw/a' }, now, 5));

describe('per-request policy', () => {
  it('allows a valid token', () => {
    expect(check(ctx(), token())).toBeUndefined();
  });

  it('applies the skew on both sides of the lifetime', () => {
    const exp = NOW / 1000;
    expect(check(ctx(), token({ exp }), route(), bearerCred, 'GET', NOW + 4000)).toBeUndefined();
    expect(check(ctx(), token({ exp }), route(), bearerCred, 'GET', NOW + 5000)).toBe('expired');
    expect(check(ctx(), token({ nbf: NOW / 1000 + 4 }))).toBeUndefined();
    expect(check(ctx(), token({ nbf: NOW / 1000 + 6 }))).toBe('not_yet_valid');
    expect(check(ctx(), token({ iat: NOW / 1000 + 6 }))).toBe('not_yet_valid');
  });

  it('refuses tokens of a key no longer trusted, and revoked tokens', () => {
    expect(check(ctx({ trusted: false }), token())).toBe('key_not_trusted');
    expect(check(ctx({ revoked: true }), token())).toBe('revoked');
  });

  it('refuses another audience, a missing scope, a method not allowed', () => {
    expect(check(ctx(), token({ aud: ['https://other.example.com'] }))).toBe('wrong_audience');
    expect(check(ctx(), token({ scopes: new Set(['b:read']) }))).toBe('insufficient_scope');
    expect(check(ctx(), token(), route(), bearerCred, 'PUT')).toBe('method_not_allowed');
  });

  it('refuses a DPoP-bound token presented as Bearer (RFC 9449 §7.2), and Bearer on a DPoP-only route', () => {
    expect(check(ctx(), token({ jkt: 'thumbprint' }))).toBe('dpop_bound_token_as_bearer');
    expect(check(ctx(), token(), route({ dpop: 'required' }))).toBe('dpop_required');
  });

  it('hands every DPoP-scheme request to checkDpop (the proof is checked after the cheap checks)', () => {
    const dpop: Credentials = { scheme: 'dpop', token: 't', proof: 'p' };
    const pending = authorizeRequest(
      ctx(),
      route(),
      token({ jkt: 'thumbprint' }),
      dpop,
      { method: 'GET', url: 'http://gw/a' },
      NOW,
      5,
    );
    expect(pending).toMatchObject({ proof: 'p', expectedJkt: 'thumbprint', accessToken: 't', method: 'GET' });
    expect(
      authorizeRequest(ctx(), route(), token(), bearerCred, { method: 'GET', url: 'http://gw/a' }, NOW, 5),
    ).toBeUndefined();
  });
});
