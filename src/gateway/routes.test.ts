import { describe, expect, it } from 'vitest';
import { gatewaySchema } from '../config/schema.ts';
import { metadataPath, metadataUrl } from './resource-metadata.ts';
import { hasTokenInQuery, hostName, isNormalPath, RouteTable, requiredScopes, upstreamPath } from './routes.ts';

function table(routes: unknown[]): RouteTable {
  return new RouteTable(gatewaySchema.parse({ routes }), ['ES256']);
}

const r = (path_prefix: string, extra: Record<string, unknown> = {}) => ({
  path_prefix,
  upstream: 'http://127.0.0.1:1',
  resource: 'https://api.example.com',
  scopes: { '*': [] },
  ...extra,
});

describe('route matching', () => {
  const t = table([
    r('/orders', { name: 'orders' }),
    r('/orders/admin', { name: 'admin' }),
    r('/orders', { name: 'orders-on-host', host: 'api.example.com' }),
    r('/', { name: 'root', host: 'catchall.example.com' }),
  ]);
  const name = (host: string | undefined, path: string) => t.match(host, path)?.name;

  it('matches whole segments only, longest prefix first, host-specific routes first', () => {
    expect(name(undefined, '/orders')).toBe('orders');
    expect(name(undefined, '/orders/7')).toBe('orders');
    expect(name(undefined, '/ordersX')).toBeUndefined();
    expect(name(undefined, '/order')).toBeUndefined();
    expect(name(undefined, '/orders/admin/x')).toBe('admin');
    expect(name(undefined, '/orders/administrator')).toBe('orders');
    expect(name('api.example.com', '/orders/7')).toBe('orders-on-host');
    expect(name('other.example.com', '/orders/7')).toBe('orders');
    expect(name('catchall.example.com', '/anything')).toBe('root');
    expect(name(undefined, '/anything')).toBeUndefined();
  });

  it('scopes by method: named, HEAD falls back to GET, "*" for the rest, else not allowed', () => {
    const [route] = table([r('/a', { scopes: { GET: ['x:read'], POST: ['x:write'] } })]).routes;
    expect(requiredScopes(route!, 'GET')).toEqual(['x:read']);
    expect(requiredScopes(route!, 'HEAD')).toEqual(['x:read']);
    expect(requiredScopes(route!, 'DELETE')).toBeUndefined();
    const [star] = table([r('/a', { scopes: { GET: ['x:read'], '*': ['x:admin'] } })]).routes;
    expect(requiredScopes(star!, 'DELETE')).toEqual(['x:admin']);
  });
});

describe('path normal form', () => {
  it('refuses dot segments, encoded slashes and backslashes, empty segments', () => {
    for (const p of [
      '/a/../b',
      '/a/..',
      '/..',
      '/a/./b',
      '/a/%2e%2e/b',
      '/a/%2E./b',
      '/a/.%2e',
      '/a/%2e/b',
      '/a%2fb',
      '/a%2Fb',
      '/a%5cb',
      '/a\\b',
      '/a//b',
      '/a%00',
    ])
      expect(isNormalPath(p), p).toBe(false);
    for (const p of ['/', '/a', '/a/b.c', '/a/..b', '/a/b..', '/a/.well-known', '/a%20b', '/v1.2/x'])
      expect(isNormalPath(p), p).toBe(true);
  });
});

describe('upstream path', () => {
  it('keeps or strips the prefix and prepends the upstream path', () => {
    const [keep] = table([r('/orders', { upstream: 'http://u:1/base/' })]).routes;
    expect(upstreamPath(keep!, '/orders/7', 'a=1')).toBe('/base/orders/7?a=1');
    const [strip] = table([r('/orders/', { upstream: 'http://u:1', strip_prefix: true })]).routes;
    expect(upstreamPath(strip!, '/orders/7', '')).toBe('/7');
    expect(upstreamPath(strip!, '/orders', '')).toBe('/');
    expect(upstreamPath(strip!, '/orders', 'q')).toBe('/?q');
  });
});

describe('helpers', () => {
  it('finds access_token in a query, however written', () => {
    expect(hasTokenInQuery('access_token=x')).toBe(true);
    expect(hasTokenInQuery('a=1&Access_Token=x')).toBe(true);
    expect(hasTokenInQuery('access%5Ftoken=x')).toBe(true);
    expect(hasTokenInQuery('my_access_token_count=1')).toBe(false);
    expect(hasTokenInQuery('a=access_token')).toBe(false);
  });

  it('reads the host name from a Host header', () => {
    expect(hostName('API.example.com:8443')).toBe('api.example.com');
    expect(hostName('[::1]:9080')).toBe('[::1]');
    expect(hostName(undefined)).toBeUndefined();
  });

  it('derives RFC 9728 metadata locations from the resource identifier (§3.1)', () => {
    expect(metadataPath('https://api.example.com')).toBe('/.well-known/oauth-protected-resource');
    expect(metadataPath('https://api.example.com/')).toBe('/.well-known/oauth-protected-resource');
    expect(metadataUrl('https://api.example.com/v1/mcp')).toBe(
      'https://api.example.com/.well-known/oauth-protected-resource/v1/mcp',
    );
  });
});
