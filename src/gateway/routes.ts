import type { GatewayConfig, GatewayRouteConfig } from '../config/schema.ts';
import type { ResourceChallenge } from '../errors/oauth-error.ts';
import type { RateRule } from '../lib/rate-limiter.ts';
import { metadataUrl } from './resource-metadata.ts';

const SLASH = 47; // '/'

/** A configured route, prepared once at start so the request path does no parsing of configuration. */
export interface Route {
  /** Names the route in events: `name`, or host and path_prefix. */
  name: string;
  host: string | undefined;
  /** path_prefix without a trailing "/" ("" for "/"). */
  prefix: string;
  /** Upstream origin (scheme://host:port): one connection pool each. */
  origin: string;
  /** The upstream URL's path without a trailing "/" ("" for none). */
  basePath: string;
  resource: string;
  /** Required scopes by HTTP method ("*" for methods not named). */
  scopes: ReadonlyMap<string, readonly string[]>;
  dpop: 'required' | 'allowed';
  /** Per-client limit on this route, or undefined when off. */
  rateRule: RateRule | undefined;
  stripPrefix: boolean;
  identityHeaders: boolean;
  forwardAuthorization: boolean;
  timeoutMs: number;
  /** WWW-Authenticate parameters for this route's refusals (RFC 9728 §5.1, RFC 9449 §7.1). */
  challenge: ResourceChallenge;
}

export function compileRoute(r: GatewayRouteConfig, dpopAlgs: readonly string[], publicOrigin?: string): Route {
  const up = new URL(r.upstream);
  const name = r.name ?? `${r.host ?? ''}${r.path_prefix}`;
  return {
    name,
    host: r.host,
    prefix: r.path_prefix.replace(/\/+$/, ''),
    origin: up.origin,
    basePath: up.pathname.replace(/\/+$/, ''),
    resource: r.resource,
    scopes: new Map(Object.entries(r.scopes)),
    dpop: r.dpop,
    rateRule: r.rate_limit.limit > 0 ? { name: `gateway:${name}`, ...r.rate_limit } : undefined,
    stripPrefix: r.strip_prefix,
    identityHeaders: r.identity_headers,
    forwardAuthorization: r.forward_authorization,
    timeoutMs: r.timeout * 1000,
    challenge: {
      resourceMetadata: metadataUrl(r.resource, publicOrigin),
      dpop: r.dpop === 'required' ? 'only' : 'also',
      dpopAlgs,
    },
  };
}

/**
 * The route table. Matching is on whole path segments (/orders matches /orders and /orders/7, never /ordersX); the
 * longest prefix wins, and a route for the request's host beats one for any host. Nothing matched: the caller
 * refuses the request (default deny).
 */
export class RouteTable {
  readonly routes: readonly Route[];
  constructor(g: GatewayConfig, dpopAlgs: readonly string[]) {
    this.routes = g.routes
      .map((r) => compileRoute(r, dpopAlgs, g.public_origin))
      .sort((a, b) => b.prefix.length - a.prefix.length || Number(b.host !== undefined) - Number(a.host !== undefined));
  }

  match(host: string | undefined, path: string): Route | undefined {
    for (const r of this.routes) {
      if (r.host !== undefined && r.host !== host) continue;
      const p = r.prefix;
      if (p === '' || path === p || (path.startsWith(p) && path.charCodeAt(p.length) === SLASH)) return r;
    }
    return undefined;
  }
}

/** The scopes a method needs on a route; undefined when the route does not allow the method at all. */
export function requiredScopes(route: Route, method: string): readonly string[] | undefined {
  return route.scopes.get(method) ?? (method === 'HEAD' ? route.scopes.get('GET') : undefined) ?? route.scopes.get('*');
}

/**
 * Whether a request path is in the normal form routing assumes. A path with dot segments (raw or percent-encoded),
 * an encoded slash or backslash, a backslash or an empty segment could be read differently by the upstream than by
 * the route table (/public/../admin), so such paths are refused rather than normalised.
 */
export function isNormalPath(path: string): boolean {
  return !/(^|\/)(\.|%2e){1,2}(\/|$)|\/\/|\\|%2f|%5c|%00/i.test(path);
}

/** The Host header's name, lower-cased, without the port (undefined when absent). */
export function hostName(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  const h = host.toLowerCase();
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    return end < 0 ? h : h.slice(0, end + 1);
  }
  const colon = h.indexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

/** The path (and query) to request upstream: the upstream's own path, then the request path (prefix stripped). */
export function upstreamPath(route: Route, path: string, query: string): string {
  let rest = route.stripPrefix ? path.slice(route.prefix.length) : path;
  if (rest === '' || rest.charCodeAt(0) !== SLASH) rest = `/${rest}`;
  const p = route.basePath + rest;
  return query === '' ? p : `${p}?${query}`;
}

/** RFC 6750 §2.3 would allow access_token in the query; OAuth 2.1 (§5.1.1) does not, and neither do we. */
export function hasTokenInQuery(query: string): boolean {
  if (!/access(_|%5f)token/i.test(query)) return false;
  for (const k of new URLSearchParams(query).keys()) if (k.toLowerCase() === 'access_token') return true;
  return false;
}
