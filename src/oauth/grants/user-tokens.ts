import { InvalidGrant, InvalidScope, InvalidTarget } from '../../errors/oauth-error.ts';
import type { SecurityEvent } from '../../events/catalogue.ts';
import { acrLevel, requiredLevel } from '../../identity/mfa.ts';
import { randomToken, sha256Hex } from '../../lib/crypto.ts';
import type { ClientRecord, GrantRecord, RefreshTokenRecord } from '../../storage/ports.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { revokeGrant } from '../grant-revocation.ts';
import { prepareAccessToken, signAccessToken } from '../tokens/access-token.ts';
import { signIdToken } from '../tokens/id-token.ts';
import type { TokenResponse } from './client-credentials.ts';

/** This server's own resource: the userinfo endpoint accepts access tokens whose audience includes it. */
export const USERINFO_PATH = '/userinfo';
export function userinfoAudience(ctx: OAuthContext): string {
  return ctx.config.issuer + USERINFO_PATH;
}

/** Scopes served by userinfo (OIDC Core §5.4) rather than by a resource server. */
const USERINFO_SCOPES = new Set(['openid', 'profile', 'email']);

/**
 * The audience and scopes of an access token issued from a user's grant. One resource per token (RFC 8707 §2):
 * the one named with `resource`, else the grant's only one. An OpenID grant's tokens also name the userinfo
 * endpoint, so a relying party can read the user's claims with the same token; a grant with only OpenID scopes
 * gets a token for userinfo alone. The token carries the grant's scopes that belong to its audience.
 */
export function userTokenAudience(
  ctx: OAuthContext,
  scopes: readonly string[],
  grantResources: readonly string[],
  requested: string | undefined,
): { aud: string | string[]; scopes: string[] } {
  const openid = scopes.includes('openid');
  const oidcScopes = scopes.filter((s) => USERINFO_SCOPES.has(s));
  let resource: string | undefined;
  if (requested !== undefined) {
    if (!grantResources.includes(requested)) throw new InvalidTarget('the grant does not cover this resource');
    resource = requested;
  } else if (grantResources.length === 1) resource = grantResources[0];
  else if (grantResources.length > 1)
    throw new InvalidTarget('this grant covers several resources: name one with the resource parameter');
  if (resource === undefined) {
    if (!openid) throw new InvalidTarget('the grant covers no resource');
    return { aud: userinfoAudience(ctx), scopes: oidcScopes };
  }
  const own = new Set(ctx.config.resources.find((r) => r.identifier === resource)?.scopes ?? []);
  const resourceScopes = scopes.filter((s) => own.has(s) && !USERINFO_SCOPES.has(s));
  return {
    aud: openid ? [resource, userinfoAudience(ctx)] : resource,
    scopes: [...resourceScopes, ...oidcScopes],
  };
}

/**
 * RFC 6749 §6 / OAuth 2.1 §4.3.1: a refresh request may ask for fewer scopes than were granted, never more.
 * Returns the scopes for this token (the refresh token itself keeps the grant's scopes).
 */
export function narrowScopes(granted: readonly string[], requested: string | undefined): string[] {
  if (requested === undefined) return [...granted];
  const wanted = [...new Set(requested.split(' ').filter(Boolean))];
  if (wanted.length === 0) throw new InvalidScope('scope must name at least one scope');
  const have = new Set(granted);
  const extra = wanted.filter((s) => !have.has(s));
  if (extra.length) throw new InvalidScope(`scope wider than granted: ${extra.join(' ').slice(0, 200)}`);
  return wanted;
}

/**
 * Whether a grant gets refresh tokens: the client must be registered for the refresh_token grant, and an OpenID
 * grant also needs offline_access (OIDC Core §11) unless the client's policy says otherwise.
 */
export function refreshAllowed(client: ClientRecord, grantScopes: readonly string[]): boolean {
  if (!client.grant_types.includes('refresh_token')) return false;
  if (!grantScopes.includes('openid')) return true;
  if (grantScopes.includes('offline_access')) return true;
  return client.metadata.refresh_token_requires_offline_access === false;
}

export interface UserTokenRequest {
  client: ClientRecord;
  grant: GrantRecord;
  grantType: string;
  /** Scopes for this access token, already narrowed; the grant's scopes when the request named none. */
  scopes: string[];
  /** The `resource` parameter of the token request. */
  resource: string | undefined;
  /** OIDC: nonce from the authorization request (code exchange only). */
  nonce?: string | null;
  /** Issue a (new) refresh token; absoluteExpiresAt carries the family's end over rotations. */
  refresh?: { absoluteExpiresAt: number } | undefined;
  /** The verified DPoP proof's key thumbprint: binds the access token and, for a public client, the refresh token. */
  jkt?: string | undefined;
}

export interface UserTokens {
  response: TokenResponse;
  /** token.issued (and refresh_token.issued): the caller appends them in the transaction that commits the change. */
  events: SecurityEvent[];
  refresh?: RefreshTokenRecord | undefined;
}

/**
 * Signs the access token (and ID token) for a user's grant and builds the refresh token record, without writing
 * anything: the grant handler then commits the code redemption or refresh rotation, these records and their events
 * in one transaction, and only then releases the response.
 */
export async function buildUserTokens(ctx: OAuthContext, r: UserTokenRequest, meta: RequestMeta): Promise<UserTokens> {
  // MFA policy holds at the token endpoint too: a grant made with fewer factors than the policy now demands
  // (mfa.required or the client's require_mfa turned on later, a phishing-resistant scope) yields no token.
  const need = requiredLevel(ctx.config, { client: r.client, scopes: r.grant.scope.split(' '), enrolled: false });
  if (acrLevel(r.grant.acr) < need)
    throw new InvalidGrant('the grant was made with fewer authentication factors than now required; sign in again');
  const { aud, scopes } = userTokenAudience(ctx, r.scopes, r.grant.resources, r.resource);
  const prepared = prepareAccessToken(
    ctx,
    {
      clientId: r.client.client_id,
      sub: r.grant.user_id,
      resource: aud,
      scopes,
      grantType: r.grantType,
      grantId: r.grant.id,
      sessionId: r.grant.session_id,
      authTime: r.grant.auth_time,
      acr: r.grant.acr,
      amr: r.grant.amr,
      jkt: r.jkt,
    },
    meta,
  );
  const at = await signAccessToken(ctx, prepared);
  const response: TokenResponse = {
    access_token: at.access_token,
    token_type: at.token_type,
    expires_in: at.expires_in,
    scope: at.scope,
  };
  const events: SecurityEvent[] = [prepared.event];
  if (r.scopes.includes('openid')) {
    const id = await signIdToken(ctx, {
      clientId: r.client.client_id,
      sub: r.grant.user_id,
      authTime: r.grant.auth_time,
      nonce: r.nonce ?? null,
      acr: r.grant.acr,
      amr: r.grant.amr,
      sid: r.grant.session_id,
      accessToken: at.access_token,
    });
    response.id_token = id.token;
  }
  let refresh: RefreshTokenRecord | undefined;
  if (r.refresh) {
    const now = ctx.clock.nowMs();
    const value = randomToken(32);
    refresh = {
      token_hash: sha256Hex(value),
      grant_id: r.grant.id,
      client_id: r.client.client_id,
      user_id: r.grant.user_id,
      scope: r.grant.scope,
      resources: r.grant.resources,
      created_at: now,
      idle_expires_at: Math.min(now + ctx.config.tokens.refresh_token_idle_ttl * 1000, r.refresh.absoluteExpiresAt),
      expires_at: r.refresh.absoluteExpiresAt,
      rotated_at: null,
      replaced_by: null,
      // RFC 9449 §5: a public client's refresh token is bound to the key; a confidential client's is bound to the
      // client by its authentication already.
      jkt: r.jkt !== undefined && r.client.token_endpoint_auth_method === 'none' ? r.jkt : null,
    };
    response.refresh_token = value;
    events.push({
      type: 'refresh_token.issued',
      at: now,
      ...correlation(meta),
      session_id: r.grant.session_id,
      client_id: r.client.client_id,
      subject: r.grant.user_id,
      grant_id: r.grant.id,
      data: {
        ref: refreshRef(refresh.token_hash),
        scope: refresh.scope,
        idle_expires_at: refresh.idle_expires_at,
        expires_at: refresh.expires_at,
        ...(refresh.jkt ? { jkt: refresh.jkt } : {}),
      },
    });
  }
  return { response, events, refresh };
}

/** A short, non-secret reference to a refresh token for events and logs (a prefix of its stored hash). */
export function refreshRef(tokenHash: string): string {
  return tokenHash.slice(0, 16);
}

/** Longest access token lifetime configured (plus skew): a grant revocation must outlive every token it covers. */
export function maxAccessTokenTtl(ctx: OAuthContext): number {
  const ttls = ctx.config.resources.map((r) => r.access_token_ttl || 0);
  return Math.max(ctx.config.tokens.access_token_ttl, ...ttls) + ctx.config.tokens.clock_skew;
}

/**
 * A code or refresh token was presented a second time: two parties hold it, and we cannot tell which is the
 * legitimate one. Records the replay and revokes the whole grant (its refresh tokens, and through the grant
 * revocation every access token issued from it) in one transaction, then refuses with invalid_grant.
 */
export async function revokeOnReplay(
  ctx: OAuthContext,
  grantId: string,
  meta: RequestMeta,
  what: {
    type: 'authorization_code.replayed' | 'refresh_token.reused';
    reason: string;
    data?: Record<string, unknown>;
  },
): Promise<never> {
  await ctx.storage.withTransaction(async (tx) => {
    const grant: GrantRecord | undefined = await tx.grants.get(grantId);
    const now = ctx.clock.nowMs();
    await tx.events.append({
      type: what.type,
      at: now,
      ...correlation(meta),
      session_id: grant?.session_id ?? null,
      client_id: grant?.client_id ?? null,
      subject: grant?.user_id ?? null,
      grant_id: grantId,
      data: { ...what.data, grant_revoked: grant !== undefined && grant.revoked_at === null },
    });
    if (grant)
      await revokeGrant(tx, grant, {
        at: now,
        reason: what.reason,
        actor: 'token_endpoint',
        expiresAt: now + maxAccessTokenTtl(ctx) * 1000,
        meta,
      });
  });
  // This node stopped accepting the grant's access tokens at commit (storage.onRevocations); other nodes hear of
  // it on the revocation bus.
  throw new InvalidGrant(
    what.type === 'authorization_code.replayed'
      ? 'the authorization code was already used; the tokens issued from it are revoked'
      : 'the refresh token was already used; the grant is revoked',
  );
}
