import { UnauthorizedClient } from '../../errors/oauth-error.ts';
import { randomToken, sha256Hex } from '../../lib/crypto.ts';
import type { DeviceCodeRecord } from '../../storage/ports.ts';
import { requestedScopesAndResources } from '../authorization/request.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { DEVICE_CODE_GRANT, deviceRef } from '../device/common.ts';
import { formatUserCode, generateUserCode } from '../device/user-code.ts';
import { PATHS } from './discovery.ts';

/** RFC 8628 §3.2 device authorization response. */
export interface DeviceAuthorizationResponse {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

/**
 * RFC 8628 §3.1 device authorization endpoint, in steps:
 * 1. authenticate the client as at /token (public clients allowed: a TV cannot keep a secret; §3.1);
 * 2. the client must be registered for the device_code grant;
 * 3. scope and resource are validated exactly as at /authorize;
 * 4. a device_code (256 random bits, stored as its SHA-256) and a user_code (§6.1) are stored with
 *    device_code.issued in one transaction.
 */
export async function deviceAuthorizationEndpoint(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
): Promise<DeviceAuthorizationResponse> {
  const { client } = await authenticateClient(ctx, input, meta, { allowPublic: true });
  if (!client.grant_types.includes(DEVICE_CODE_GRANT))
    throw new UnauthorizedClient('this client may not use the device authorization grant');
  const { scopes, resources } = requestedScopesAndResources(ctx, client, input.params);

  const cfg = ctx.config.device;
  const deviceCode = randomToken(32);
  const now = ctx.clock.nowMs();
  const record: DeviceCodeRecord = {
    device_code_hash: sha256Hex(deviceCode),
    user_code: '',
    client_id: client.client_id,
    scope: scopes.join(' '),
    resources,
    status: 'pending',
    interval_s: cfg.interval,
    last_poll_at: null,
    user_id: null,
    session_id: null,
    auth_time: null,
    acr: null,
    amr: null,
    created_at: now,
    expires_at: now + cfg.code_ttl * 1000,
    decided_at: null,
    redeemed_at: null,
  };
  // user_code is unique in storage. A collision (with a live code or an expired one not yet purged) is unlikely
  // in a space of 2.6e10; draw again rather than fail.
  for (let attempt = 0; ; attempt++) {
    record.user_code = generateUserCode();
    if (attempt < 5 && (await ctx.storage.deviceCodes.getByUserCode(record.user_code))) continue;
    break;
  }
  await ctx.storage.withTransaction(async (tx) => {
    await tx.deviceCodes.insert(record);
    await tx.events.append({
      type: 'device_code.issued',
      at: now,
      ...correlation(meta),
      client_id: client.client_id,
      data: {
        device: deviceRef(record.device_code_hash),
        scope: record.scope,
        resources,
        expires_at: record.expires_at,
        interval: record.interval_s,
        ip: meta.ip,
      },
    });
  });
  const verification = ctx.config.issuer + PATHS.device;
  const display = formatUserCode(record.user_code);
  return {
    device_code: deviceCode,
    user_code: display,
    verification_uri: verification,
    // §3.3.1: lets the device show a QR code; the page only fills the code in, the user still confirms.
    verification_uri_complete: `${verification}?user_code=${encodeURIComponent(display)}`,
    expires_in: cfg.code_ttl,
    interval: cfg.interval,
  };
}
