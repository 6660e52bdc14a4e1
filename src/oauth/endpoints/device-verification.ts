import { type MfaLevel, mfaGap } from '../../identity/mfa.ts';
import { noteRefusal } from '../../identity/rate-limits.ts';
import type { LoadedSession } from '../../identity/sessions.ts';
import { sha256Hex } from '../../lib/crypto.ts';
import { addressKey } from '../../lib/ip.ts';
import type { RateRule } from '../../lib/rate-limiter.ts';
import type { AuthorizationRequestRecord, ClientRecord, DeviceCodeRecord } from '../../storage/ports.ts';
import { REQUEST_URI_PREFIX, storeAuthorizationRequest } from '../authorization/request.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { deviceRef } from '../device/common.ts';
import { formatUserCode, normaliseUserCode } from '../device/user-code.ts';

/**
 * The verification page's logic (RFC 8628 §3.3), for a person who is signed in:
 * 1. enterUserCode: the code typed (or prefilled from verification_uri_complete and confirmed by a click) is checked;
 *    wrong codes are counted per session and per IP address and, over the limit, refused outright (§5.1: the
 *    user code is short, so guessing must be throttled). A good code gives a single-use ticket bound to the session.
 * 2. showDeviceRequest: the ticket shows the client, scopes and resources, and the code itself to compare with the
 *    device's screen (§5.4 remote phishing: the user must see what they approve).
 * 3. decideDeviceRequest: approve or deny, once, with its event.
 * Nothing here approves by itself: approval is always a POST of the form shown in step 2.
 */

/**
 * Wrong-code limits, counted by the shared limiter (lib/rate-limiter.ts: in process, or Redis with several nodes):
 * per sign-in session and per IP address (IPv6 by /64), each a burst of max_failures_* refilled over
 * failure_window.
 */
function deviceRules(ctx: OAuthContext): { bySession: RateRule; byAddress: RateRule } {
  const d = ctx.config.device;
  return {
    bySession: { name: 'device_failures_per_session', limit: d.max_failures_per_session, window: d.failure_window },
    byAddress: { name: 'device_failures_per_ip', limit: d.max_failures_per_ip, window: d.failure_window },
  };
}

export type VerificationFailure = 'malformed' | 'unknown' | 'expired' | 'already_decided' | 'throttled';

export type EnterOutcome =
  | { kind: 'ticket'; requestUri: string }
  | { kind: 'invalid'; reason: Exclude<VerificationFailure, 'throttled'> }
  | { kind: 'throttled'; retryAfter: number }
  /** The session must pass (or enrol) a second factor first; the code is not spent and can be entered again. */
  | { kind: 'mfa'; level: MfaLevel; enrolled: boolean };

export type ShowOutcome =
  | { kind: 'confirm'; device: DeviceCodeRecord; client: ClientRecord; userCode: string; requestUri: string }
  | { kind: 'gone' };

export type DecideOutcome =
  | { kind: 'done'; approved: boolean }
  | { kind: 'gone' }
  | { kind: 'mfa'; level: MfaLevel; enrolled: boolean };

type SignedIn = LoadedSession & { user: NonNullable<LoadedSession['user']> };

async function recordFailure(
  ctx: OAuthContext,
  session: SignedIn,
  reason: VerificationFailure,
  device: DeviceCodeRecord | undefined,
  meta: RequestMeta,
): Promise<void> {
  await ctx.storage.events.append({
    type: 'device_code.verification_failed',
    at: ctx.clock.nowMs(),
    ...correlation(meta),
    client_id: device?.client_id ?? null,
    subject: session.user.id,
    data: {
      reason,
      device: device ? deviceRef(device.device_code_hash) : null,
      sid: session.sid,
      ip: meta.ip,
      user_agent: meta.userAgent?.slice(0, 200) ?? null,
    },
  });
}

export async function enterUserCode(
  ctx: OAuthContext,
  input: { session: SignedIn; userCode: string | undefined },
  meta: RequestMeta,
): Promise<EnterOutcome> {
  const { session } = input;
  const rules = deviceRules(ctx);
  const address = addressKey(meta.ip);
  // Over either limit, even a right code is refused: otherwise the limit would only slow guessing down, and a
  // guesser would still learn when one hits.
  const bySession = await ctx.limiter.check(session.sid, rules.bySession);
  const byAddress = await ctx.limiter.check(address, rules.byAddress);
  if (!bySession.allowed || !byAddress.allowed) {
    await recordFailure(ctx, session, 'throttled', undefined, meta);
    if (!bySession.allowed) await noteRefusal(ctx, rules.bySession, 'session', meta, bySession, session.sid);
    if (!byAddress.allowed) await noteRefusal(ctx, rules.byAddress, 'ip', meta, byAddress);
    return { kind: 'throttled', retryAfter: Math.max(bySession.retryAfter, byAddress.retryAfter) };
  }
  const code = normaliseUserCode(input.userCode);
  const now = ctx.clock.nowMs();
  const device = code ? await ctx.storage.deviceCodes.getByUserCode(code) : undefined;
  let reason: Exclude<VerificationFailure, 'throttled'> | undefined;
  if (!code) reason = 'malformed';
  else if (!device) reason = 'unknown';
  else if (now >= device.expires_at) reason = 'expired';
  else if (device.status !== 'pending') reason = 'already_decided';
  const client = device && !reason ? await ctx.clients.get(device.client_id) : undefined;
  if (!reason && (!client || client.disabled)) reason = 'unknown';
  if (reason) {
    await ctx.limiter.hit(session.sid, rules.bySession);
    await ctx.limiter.hit(address, rules.byAddress);
    await recordFailure(ctx, session, reason, device, meta);
    return { kind: 'invalid', reason };
  }
  // MFA policy applies here as at /authorize: a password-only session never approves a device that needs more.
  const gap = await mfaGap(ctx, session, { client, scopes: device!.scope.split(' ').filter(Boolean), acrValues: [] });
  if (gap) return { kind: 'mfa', ...gap };
  // The ticket lives no longer than the code, and is good for this session only.
  const ttl = Math.min(ctx.config.authorization.interaction_ttl, Math.ceil((device!.expires_at - now) / 1000));
  const { requestUri } = await storeAuthorizationRequest(
    ctx,
    'device',
    device!.client_id,
    { _user_code: code!, _sid: session.sid },
    ttl,
  );
  return { kind: 'ticket', requestUri };
}

/** The stored ticket behind a request_uri, if it is a live device ticket of this session. */
async function ticketOf(
  ctx: OAuthContext,
  session: SignedIn,
  requestUri: string | undefined,
): Promise<AuthorizationRequestRecord | undefined> {
  if (!requestUri?.startsWith(REQUEST_URI_PREFIX)) return undefined;
  const id = requestUri.slice(REQUEST_URI_PREFIX.length);
  if (id.length < 20 || id.length > 100) return undefined;
  const rec = await ctx.storage.authorizationRequests.get(sha256Hex(id));
  if (rec?.kind !== 'device' || rec.used_at !== null || rec.expires_at <= ctx.clock.nowMs()) return undefined;
  // Bound to the session that typed the code: a ticket link sent to someone else shows them nothing.
  if (rec.params._sid !== session.sid) return undefined;
  return rec;
}

async function pendingDevice(ctx: OAuthContext, userCode: string | undefined): Promise<DeviceCodeRecord | undefined> {
  if (!userCode) return undefined;
  const d = await ctx.storage.deviceCodes.getByUserCode(userCode);
  if (d?.status !== 'pending' || d.expires_at <= ctx.clock.nowMs()) return undefined;
  return d;
}

export async function showDeviceRequest(
  ctx: OAuthContext,
  input: { session: SignedIn; requestUri: string | undefined },
): Promise<ShowOutcome> {
  const ticket = await ticketOf(ctx, input.session, input.requestUri);
  const device = await pendingDevice(ctx, ticket?.params._user_code);
  const client = device ? await ctx.clients.get(device.client_id) : undefined;
  if (!ticket || !device || !client || client.disabled) return { kind: 'gone' };
  return {
    kind: 'confirm',
    device,
    client,
    userCode: formatUserCode(device.user_code),
    requestUri: input.requestUri!,
  };
}

/**
 * Approve or deny. The ticket is consumed (single use); the decision, its event and, on approval, the remembered
 * consent (so the connected-apps page lists the device and can withdraw it) commit together. The device_code's
 * grant and tokens are created when the device next polls (grants/device-code.ts).
 */
export async function decideDeviceRequest(
  ctx: OAuthContext,
  input: { session: SignedIn; requestUri: string | undefined; approve: boolean },
  meta: RequestMeta,
): Promise<DecideOutcome> {
  const { session } = input;
  const ticket = await ticketOf(ctx, session, input.requestUri);
  if (!ticket) return { kind: 'gone' };
  if (input.approve) {
    const d = await pendingDevice(ctx, ticket.params._user_code);
    const gap = d
      ? await mfaGap(ctx, session, {
          client: await ctx.clients.get(d.client_id),
          scopes: d.scope.split(' ').filter(Boolean),
          acrValues: [],
        })
      : undefined;
    if (gap) return { kind: 'mfa', ...gap };
  }
  const now = ctx.clock.nowMs();
  const consumed = await ctx.storage.authorizationRequests.consume(ticket.id_hash, ticket.client_id, now);
  if (consumed.status !== 'ok') return { kind: 'gone' };
  const userCode = ticket.params._user_code!;
  const device = await pendingDevice(ctx, userCode);
  if (!device) return { kind: 'gone' };
  const user = session.user;
  const decided = await ctx.storage.withTransaction(async (tx) => {
    const ok = await tx.deviceCodes.decide(
      userCode,
      {
        status: input.approve ? 'approved' : 'denied',
        user_id: user.id,
        session_id: session.sid,
        auth_time: session.record.auth_time,
        acr: session.record.acr,
        amr: session.record.amr,
      },
      now,
    );
    if (!ok) return false;
    const base = { at: now, ...correlation(meta), client_id: device.client_id, subject: user.id };
    await tx.events.append({
      ...base,
      type: input.approve ? 'device_code.approved' : 'device_code.denied',
      data: {
        device: deviceRef(device.device_code_hash),
        scope: device.scope,
        resources: device.resources,
        sid: session.sid,
        ip: meta.ip,
      },
    });
    if (input.approve) {
      const scopes = device.scope.split(' ').filter(Boolean);
      const c = await tx.consents.grant(user.id, device.client_id, scopes, device.resources, now);
      await tx.events.append({
        ...base,
        type: 'consent.granted',
        data: { scope: device.scope, resources: device.resources, consented: c.scope, via: 'device' },
      });
    }
    return true;
  });
  return decided ? { kind: 'done', approved: input.approve } : { kind: 'gone' };
}
