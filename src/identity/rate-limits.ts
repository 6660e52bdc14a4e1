import type { Config } from '../config/schema.ts';
import { addressKey } from '../lib/ip.ts';
import type { LimitResult, RateRule } from '../lib/rate-limiter.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../oauth/context.ts';

/**
 * Rate limits by request: every throttled endpoint counts each request once per IP address (IPv6 by /64) and once
 * globally, with the rules in config throttle.* (NIST SP 800-63B-4 §3.2.2 rate limiting; RFC 6585 §4 for the 429
 * the HTTP layer answers). Framework-free: src/http calls limitRequest() and turns a refusal into 429 +
 * Retry-After.
 *
 * For the second-factor pages: `await limitRequest(ctx, 'mfa', meta)` before checking a code, and for counters of
 * one's own (per account, per session) `ctx.limiter.hit(key, rule)` / `check()` with a RateRule, then
 * `noteRefusal()` when refused.
 */
export type LimitedAction = 'login' | 'mfa' | 'token' | 'introspect' | 'device';

/** What a refusal counted by: never the raw key in the event's name, the IP (when there is one) in its data. */
export type KeyKind = 'ip' | 'global' | 'session' | 'account' | 'client';

export type ThrottleRuleName = {
  [K in keyof Config['throttle']]: Config['throttle'][K] extends { limit: number } ? K : never;
}[keyof Config['throttle']];

export function rule(config: Config, name: ThrottleRuleName): RateRule {
  const r = config.throttle[name];
  return { name, limit: r.limit, window: r.window };
}

export interface Refusal {
  rule: string;
  retryAfter: number;
}

/** Counts the request against `{action}_per_ip` and `{action}_global`; a Refusal when either is exhausted. */
export async function limitRequest(
  ctx: OAuthContext,
  action: LimitedAction,
  meta: RequestMeta,
): Promise<Refusal | undefined> {
  const perIp = rule(ctx.config, `${action}_per_ip`);
  const ip = addressKey(meta.ip);
  const a = await ctx.limiter.hit(ip, perIp);
  if (!a.allowed) return noteRefusal(ctx, perIp, 'ip', meta, a);
  const global = rule(ctx.config, `${action}_global`);
  const b = await ctx.limiter.hit('*', global);
  if (!b.allowed) return noteRefusal(ctx, global, 'global', meta, b);
  return undefined;
}

/**
 * Records rate_limit.hit for a refusal — once per rule and key per window, not per refused request, so a flood
 * cannot flood the event log — and returns the Refusal to answer with.
 */
export async function noteRefusal(
  ctx: Pick<OAuthContext, 'limiter' | 'storage' | 'clock'>,
  r: RateRule,
  kind: KeyKind,
  meta: RequestMeta,
  result: LimitResult,
  key: string = kind === 'global' ? '*' : addressKey(meta.ip),
): Promise<Refusal> {
  const first = await ctx.limiter.hit(`${r.name}:${key}`, { name: 'rate_limit_event', limit: 1, window: r.window });
  if (first.allowed)
    await ctx.storage.events.append({
      type: 'rate_limit.hit',
      at: ctx.clock.nowMs(),
      ...correlation(meta),
      data: {
        rule: r.name,
        key_kind: kind,
        limit: r.limit,
        window: r.window,
        retry_after: result.retryAfter,
        ip: meta.ip,
        user_agent: meta.userAgent?.slice(0, 200) ?? null,
      },
    });
  return { rule: r.name, retryAfter: result.retryAfter };
}
