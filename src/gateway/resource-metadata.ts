import type { Config } from '../config/schema.ts';

/** RFC 9728 §3: the well-known URI suffix of protected resource metadata. */
export const PRM_PREFIX = '/.well-known/oauth-protected-resource';

/**
 * RFC 9728 §3.1: the metadata path of a resource identifier is the well-known prefix followed by the identifier's
 * own path (https://api.example.com/orders -> /.well-known/oauth-protected-resource/orders).
 */
export function metadataPath(resource: string): string {
  const u = new URL(resource);
  const p = u.pathname === '/' ? '' : u.pathname;
  return `${PRM_PREFIX}${p}${u.search}`;
}

/**
 * The absolute metadata URL named in WWW-Authenticate resource_metadata (RFC 9728 §5.1): at the gateway's public
 * origin (gateway.public_origin) when it has one, since that is where the gateway serves it; else at the resource
 * identifier's own origin (RFC 9728 §3.1).
 */
export function metadataUrl(resource: string, publicOrigin?: string): string {
  return (publicOrigin ?? new URL(resource).origin) + metadataPath(resource);
}

/**
 * RFC 9728 §2 metadata for one resource: the authorization server that issues its tokens (this one), the scopes it
 * knows, how tokens are presented (header only: query and body are refused), and whether DPoP is required.
 */
export function protectedResourceMetadata(
  config: Config,
  resource: string,
  dpopRequired: boolean,
): Record<string, unknown> {
  const r = config.resources.find((x) => x.identifier === resource);
  return {
    resource,
    authorization_servers: [config.issuer],
    ...(r?.scopes.length ? { scopes_supported: [...r.scopes] } : {}),
    bearer_methods_supported: ['header'],
    ...(r?.name ? { resource_name: r.name } : {}),
    dpop_bound_access_tokens_required: dpopRequired,
  };
}

/**
 * The metadata documents the gateway serves, by path. Two resources whose identifiers differ only in host share a
 * path; the request's Host then picks one (§3.3: the resource in the document must be the one the client asked for).
 */
export class MetadataIndex {
  private readonly byPath = new Map<string, Array<{ host: string; body: string }>>();

  constructor(config: Config) {
    const routes = config.gateway?.routes ?? [];
    for (const resource of new Set(routes.map((r) => r.resource))) {
      const required = routes.some((r) => r.resource === resource && r.dpop === 'required');
      const path = metadataPath(resource);
      const list = this.byPath.get(path) ?? [];
      list.push({
        host: new URL(resource).hostname.toLowerCase(),
        body: JSON.stringify(protectedResourceMetadata(config, resource, required)),
      });
      this.byPath.set(path, list);
    }
  }

  /** The JSON document for a request path (with query) and Host name, if the gateway serves one there. */
  find(pathAndQuery: string, host: string | undefined): string | undefined {
    const list = this.byPath.get(pathAndQuery);
    if (!list) return undefined;
    if (list.length === 1) return list[0]?.body;
    return list.find((x) => x.host === host)?.body;
  }
}
