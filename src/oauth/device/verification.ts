import type { LoadedSession } from '../../identity/sessions.ts';
import { FailureWindow } from '../../identity/throttle.ts';
import type { ClientRecord, DeviceCodeRecord } from '../../storage/ports.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';
import { normalizeUserCode } from './user-code.ts';

export type VerificationResult =
  | { kind: 'confirm'; device: DeviceCodeRecord; client: ClientRecord }
  | { kind: 'invalid' }
  | { kind: 'throttled'; retryAfter: number };

/**
 * RFC 8628 §3.3 user interaction, and §5.1 brute forcing: a typed user code is looked up only while the IP address
 * and the session have guesses left; every wrong code counts against both and writes an event.
 */
export class DeviceVerification {
  private readonly failures: FailureWindow;
  private readonly ctx: OAuthContext;
  constructor(ctx: OAuthContext) {
    this.ctx = ctx;
    this.failures = new FailureWindow(ctx.config.authorization.device_verification_attempts, 15 * 60_000, ctx.clock);
  }

  async lookup(typed: string, session: LoadedSession, meta: RequestMeta): Promise<VerificationResult> {
    const keys = [`ip:${meta.ip}`, `sid:${session.sid}`];
    const wait = Math.max(...keys.map((k) => this.failures.blockedFor(k)));
    if (wait > 0) return { kind: 'throttled', retryAfter: wait };
    const code = normalizeUserCode(typed);
    const device = code ? await this.ctx.storage.deviceCodes.getByUserCode(code) : undefined;
    const now = this.ctx.clock.nowMs();
    const client = device ? await this.ctx.clients.get(device.client_id) : undefined;
    if (device && client && !client.disabled && device.status === 'pending' && device.expires_at > now)
      return { kind: 'confirm', device, client };
    for (const k of keys) this.failures.fail(k);
    await this.ctx.storage.events.append({
      type: 'device_code.verification_failed',
      at: now,
      subject: session.user?.id ?? null,
      request_id: meta.requestId,
      data: { ip: meta.ip, known: !!device },
    });
    return { kind: 'invalid' };
  }

  /** The person's decision, once (the store refuses a second decision or an expired code). */
  async decide(
    typed: string,
    approve: boolean,
    session: LoadedSession & { user: NonNullable<LoadedSession['user']> },
    meta: RequestMeta,
  ): Promise<{ ok: boolean; device: DeviceCodeRecord | undefined }> {
    const code = normalizeUserCode(typed);
    if (!code) return { ok: false, device: undefined };
    const now = this.ctx.clock.nowMs();
    return this.ctx.storage.withTransaction(async (tx) => {
      const device = await tx.deviceCodes.getByUserCode(code);
      if (!device) return { ok: false, device };
      const ok = await tx.deviceCodes.decide(
        code,
        {
          status: approve ? 'approved' : 'denied',
          user_id: session.user.id,
          session_id: session.sid,
          auth_time: session.record.auth_time,
          acr: session.record.acr,
          amr: session.record.amr,
        },
        now,
      );
      if (ok)
        await tx.events.append({
          type: approve ? 'device_code.approved' : 'device_code.denied',
          at: now,
          client_id: device.client_id,
          subject: session.user.id,
          request_id: meta.requestId,
          data: { scope: device.scope, sid: session.sid },
        });
      return { ok, device };
    });
  }
}
