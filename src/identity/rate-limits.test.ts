import { describe, expect, it } from 'vitest';
import { buildConfig } from '../config/load.ts';
import type { SecurityEvent } from '../events/catalogue.ts';
import { MemoryLimiter } from '../lib/rate-limiter.ts';
import type { OAuthContext } from '../oauth/context.ts';
import { limitRequest } from './rate-limits.ts';

/** The second-factor limits have no page yet (the MFA work adds it); this pins what it will get. */
describe('limitRequest', () => {
  function fakeCtx(throttle: Record<string, unknown>) {
    const events: SecurityEvent[] = [];
    let now = 1_000_000;
    const clock = { nowMs: () => now };
    const ctx = {
      config: buildConfig({ throttle }),
      clock,
      limiter: new MemoryLimiter(clock),
      storage: { events: { append: async (e: SecurityEvent) => void events.push(e) } },
    } as unknown as OAuthContext;
    return { ctx, events, advance: (s: number) => (now += s * 1000) };
  }
  const meta = (ip: string) => ({ requestId: 'r', ip, userAgent: 'ua' });

  it('mfa: per address (IPv6 by /64), then globally; one rate_limit.hit per rule, key and window', async () => {
    const { ctx, events, advance } = fakeCtx({
      mfa_per_ip: { limit: 2, window: '1m' },
      mfa_global: { limit: 3, window: '1m' },
    });
    expect(await limitRequest(ctx, 'mfa', meta('2001:db8::1'))).toBeUndefined();
    expect(await limitRequest(ctx, 'mfa', meta('2001:db8::2'))).toBeUndefined();
    // Same /64: the third is refused by the per-address rule.
    expect(await limitRequest(ctx, 'mfa', meta('2001:db8::3'))).toEqual({ rule: 'mfa_per_ip', retryAfter: 30 });
    expect(await limitRequest(ctx, 'mfa', meta('2001:db8::3'))).toMatchObject({ rule: 'mfa_per_ip' });
    expect(await limitRequest(ctx, 'mfa', meta('192.0.2.1'))).toBeUndefined();
    expect(await limitRequest(ctx, 'mfa', meta('192.0.2.2'))).toEqual({ rule: 'mfa_global', retryAfter: 20 });
    expect(events.map((e) => [e.type, e.data.rule, e.data.key_kind])).toEqual([
      ['rate_limit.hit', 'mfa_per_ip', 'ip'],
      ['rate_limit.hit', 'mfa_global', 'global'],
    ]);
    advance(60);
    expect(await limitRequest(ctx, 'mfa', meta('2001:db8::3'))).toBeUndefined();
  });
});
