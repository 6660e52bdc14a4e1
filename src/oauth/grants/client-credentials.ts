import { InvalidScope, InvalidTarget } from '../../errors/oauth-error.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';
import { issueAccessToken } from '../tokens/access-token.ts';

/** A verified DPoP proof that came with the token request (RFC 9449 §5): the tokens are bound to its key. */
export interface GrantDpop {
  jkt: string;
}

export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  scope: string;
  [k: string]: unknown;
}

/**
 * RFC 8707 §2: picks the audience. One resource per token (least privilege); a client allowed exactly one
 * resource gets it by default.
 */
export function resolveResource(ctx: OAuthContext, client: ClientRecord, requested: string | undefined): string {
  if (requested === undefined) {
    if (client.resources.length === 1) return client.resources[0]!;
    if (client.resources.length === 0) throw new InvalidTarget('this client is not allowed any resource');
    throw new InvalidTarget('this client may use several resources: name one with the resource parameter');
  }
  let url: URL;
  try {
    url = new URL(requested);
  } catch {
    throw new InvalidTarget('resource must be an absolute URI (RFC 8707 §2)');
  }
  if (url.hash) throw new InvalidTarget('resource must not contain a fragment (RFC 8707 §2)');
  if (!ctx.config.resources.some((r) => r.identifier === requested)) throw new InvalidTarget('unknown resource');
  if (!client.resources.includes(requested)) throw new InvalidTarget('this client is not allowed this resource');
  return requested;
}

/**
 * Granted scopes: requested ⊆ client's allowed ∩ resource's scopes (RFC 6749 §3.3). Omitted scope means every
 * scope the client is allowed on that resource.
 */
export function resolveScopes(
  ctx: OAuthContext,
  client: ClientRecord,
  resource: string,
  requested: string | undefined,
): string[] {
  const allowed = new Set(client.scope.split(' ').filter(Boolean));
  const resourceScopes = new Set(ctx.config.resources.find((r) => r.identifier === resource)?.scopes ?? []);
  if (requested === undefined) return [...allowed].filter((s) => resourceScopes.has(s));
  if (!/^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$/.test(requested))
    throw new InvalidScope('scope is not a space-separated list of scope tokens (RFC 6749 §3.3)');
  const wanted = [...new Set(requested.split(' '))];
  for (const s of wanted) {
    if (!allowed.has(s)) throw new InvalidScope(`scope "${s}" is not allowed for this client`);
    if (!resourceScopes.has(s)) throw new InvalidScope(`scope "${s}" does not belong to resource ${resource}`);
  }
  return wanted;
}

/** RFC 6749 §4.4: the client acts on its own behalf; sub is the client id. */
export async function clientCredentialsGrant(
  ctx: OAuthContext,
  client: ClientRecord,
  params: Readonly<Record<string, string>>,
  meta: RequestMeta,
  dpop?: GrantDpop,
): Promise<TokenResponse> {
  const resource = resolveResource(ctx, client, params.resource);
  const scopes = resolveScopes(ctx, client, resource, params.scope);
  const t = await issueAccessToken(
    ctx,
    {
      clientId: client.client_id,
      sub: client.client_id,
      resource,
      scopes,
      grantType: 'client_credentials',
      jkt: dpop?.jkt,
    },
    meta,
  );
  return { access_token: t.access_token, token_type: t.token_type, expires_in: t.expires_in, scope: t.scope };
}
