import {
  AccessDenied,
  AuthorizationPending,
  ExpiredToken,
  InvalidGrant,
  InvalidRequest,
  SlowDown,
} from '../../errors/oauth-error.ts';
import { randomId, sha256Hex } from '../../lib/crypto.ts';
import type { ClientRecord, GrantRecord } from '../../storage/ports.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { DEVICE_CODE_GRANT, deviceRef } from '../device/common.ts';
import type { GrantDpop, TokenResponse } from './client-credentials.ts';
import { buildUserTokens, refreshAllowed } from './user-tokens.ts';

/**
 * RFC 8628 §3.4/§3.5 device access token request. In order:
 * 1. the device_code must exist and belong to this client; another client's poll changes nothing (not even the
 *    polling interval of the rightful device);
 * 2. the poll is recorded: one faster than the interval grows the interval by 5 s and, while the user has not
 *    decided, answers slow_down;
 * 3. expired: expired_token; undecided: authorization_pending; denied: access_denied; redeemed: invalid_grant;
 * 4. approved: the grant and its tokens are built exactly like the code flow's (user-tokens.ts), and committed in
 *    the transaction that flips the device code to redeemed, so of concurrent polls exactly one gets tokens.
 */
export async function deviceCodeGrant(
  ctx: OAuthContext,
  client: ClientRecord,
  params: Readonly<Record<string, string>>,
  meta: RequestMeta,
  dpop?: GrantDpop,
): Promise<TokenResponse> {
  const value = params.device_code;
  if (!value) throw new InvalidRequest('device_code is required');
  const hash = sha256Hex(value);
  const known = await ctx.storage.deviceCodes.get(hash);
  if (!known) throw new InvalidGrant('the device_code is invalid');
  if (known.client_id !== client.client_id) throw new InvalidGrant('the device_code was issued to another client');

  const now = ctx.clock.nowMs();
  const polled = await ctx.storage.deviceCodes.poll(hash, now);
  if (!polled) throw new InvalidGrant('the device_code is invalid');
  const d = polled.before;
  if (d.status === 'redeemed') throw new InvalidGrant('the device_code was already used');
  if (d.status === 'denied') throw new AccessDenied('the user denied the request', 400);
  if (now >= d.expires_at) throw new ExpiredToken();
  if (d.status === 'pending') {
    if (polled.slowDown)
      throw new SlowDown(`polling too fast: wait at least ${d.interval_s + 5} seconds between requests`);
    throw new AuthorizationPending();
  }

  // Approved.
  if (!d.user_id) throw new InvalidGrant('the device_code was approved by nobody');
  const user = await ctx.storage.users.getById(d.user_id);
  if (!user || user.disabled) throw new InvalidGrant('the user is disabled');
  const grant: GrantRecord = {
    id: randomId(),
    user_id: d.user_id,
    client_id: client.client_id,
    scope: d.scope,
    resources: d.resources,
    session_id: d.session_id,
    auth_time: d.auth_time,
    acr: d.acr,
    amr: d.amr ?? [],
    created_at: now,
    revoked_at: null,
    revoked_reason: null,
  };
  const scopes = grant.scope.split(' ').filter(Boolean);
  const tokens = await buildUserTokens(
    ctx,
    {
      client,
      grant,
      grantType: DEVICE_CODE_GRANT,
      scopes,
      resource: params.resource,
      jkt: dpop?.jkt,
      refresh: refreshAllowed(client, scopes)
        ? { absoluteExpiresAt: grant.created_at + ctx.config.tokens.refresh_token_absolute_ttl * 1000 }
        : undefined,
    },
    meta,
  );
  const won = await ctx.storage.withTransaction(async (tx) => {
    const at = ctx.clock.nowMs();
    if (!(await tx.deviceCodes.redeem(hash, at))) return false;
    const base = {
      at,
      ...correlation(meta),
      session_id: grant.session_id,
      client_id: client.client_id,
      subject: grant.user_id,
      grant_id: grant.id,
    };
    await tx.grants.insert(grant);
    await tx.events.append({
      ...base,
      type: 'grant.created',
      data: { scope: grant.scope, resources: grant.resources, via: 'device_code' },
    });
    await tx.events.append({
      ...base,
      type: 'device_code.redeemed',
      data: {
        device: deviceRef(hash),
        scope: grant.scope,
        refresh_token: tokens.refresh !== undefined,
        id_token: tokens.response.id_token !== undefined,
      },
    });
    if (tokens.refresh) await tx.refreshTokens.insert(tokens.refresh);
    for (const e of tokens.events) await tx.events.append(e);
    return true;
  });
  // Another poll redeemed it first (or it expired in between): this one gets nothing.
  if (!won) throw new InvalidGrant('the device_code was already used');
  return tokens.response;
}
