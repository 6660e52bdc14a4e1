import { InvalidScope, InvalidTarget, UnauthorizedClient } from '../../errors/oauth-error.ts';
import { randomToken, sha256Hex } from '../../lib/crypto.ts';
import type { DeviceCodeRecord } from '../../storage/ports.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';
import { formatUserCode, newUserCode } from '../device/user-code.ts';

export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
export const DEVICE_PATHS = { authorization: '/device_authorization', verification: '/device' } as const;

export interface DeviceAuthorizationResponse {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

/**
 * RFC 8628 §3.1-3.2 device authorization endpoint: authenticate the client (public clients too), check the grant
 * and scopes, store the device code hashed with a fresh user code, and answer where the person should go.
 */
export async function deviceAuthorizationEndpoint(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
): Promise<DeviceAuthorizationResponse> {
  const { client } = await authenticateClient(ctx, input, meta, { allowPublic: true });
  if (!client.grant_types.includes(DEVICE_GRANT))
    throw new UnauthorizedClient('this client may not use the device authorization grant');
  const scopes = [...new Set((input.params.scope ?? '').split(' ').filter(Boolean))];
  if (scopes.length === 0) throw new InvalidScope('scope is required');
  const allowed = new Set(client.scope.split(' ').filter(Boolean));
  const bad = scopes.filter((x) => !allowed.has(x));
  if (bad.length) throw new InvalidScope(`scope not allowed for this client: ${bad.join(' ').slice(0, 200)}`);
  let resources: string[];
  if (input.params.resource !== undefined) {
    if (!client.resources.includes(input.params.resource))
      throw new InvalidTarget('this client is not allowed this resource');
    resources = [input.params.resource];
  } else {
    const wanted = new Set(scopes);
    resources = ctx.config.resources
      .filter((r) => client.resources.includes(r.identifier) && r.scopes.some((x) => wanted.has(x)))
      .map((r) => r.identifier);
  }
  const a = ctx.config.authorization;
  const deviceCode = randomToken(32);
  const now = ctx.clock.nowMs();
  const rec: DeviceCodeRecord = {
    device_code_hash: sha256Hex(deviceCode),
    user_code: newUserCode(),
    client_id: client.client_id,
    scope: scopes.join(' '),
    resources,
    status: 'pending',
    interval_s: a.device_interval,
    last_poll_at: null,
    user_id: null,
    session_id: null,
    auth_time: null,
    acr: null,
    amr: null,
    created_at: now,
    expires_at: now + a.device_code_ttl * 1000,
    decided_at: null,
    redeemed_at: null,
  };
  // A user-code collision (1 in 2^34 per live code) violates the unique index: draw again.
  for (let attempt = 0; ; attempt++) {
    try {
      await ctx.storage.withTransaction(async (tx) => {
        await tx.deviceCodes.insert(rec);
        await tx.events.append({
          type: 'device_code.issued',
          at: now,
          client_id: client.client_id,
          request_id: meta.requestId,
          data: { scope: rec.scope, resources, expires_at: rec.expires_at },
        });
      });
      break;
    } catch (e) {
      if (attempt >= 3) throw e;
      rec.user_code = newUserCode();
    }
  }
  const verification = ctx.config.issuer + DEVICE_PATHS.verification;
  const shown = formatUserCode(rec.user_code);
  return {
    device_code: deviceCode,
    user_code: shown,
    verification_uri: verification,
    verification_uri_complete: `${verification}?user_code=${shown}`,
    expires_in: a.device_code_ttl,
    interval: a.device_interval,
  };
}
