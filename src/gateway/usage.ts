import type { SecurityEvent } from '../events/catalogue.ts';
import type { GatewayToken } from './verify-token.ts';

/** Distinct client addresses listed per token and route between flushes; requests from further ones are counted. */
const MAX_IPS = 16;

interface UsageEntry {
  token: GatewayToken;
  route: string;
  resource: string;
  count: number;
  first: number;
  last: number;
  ips: string[];
  moreIps: number;
}

/**
 * Where each token was used, without one write per request: allowed requests are counted per token and route
 * (count, first and last seen, client addresses) in memory and written as gateway.usage events at every flush
 * (at least once a second, gateway.usage_flush_ms). Memory is bounded by the tokens in use within one interval.
 */
export class UsageRecorder {
  /** route name -> jti -> entry: two lookups, no key string built per request. */
  private pending = new Map<string, Map<string, UsageEntry>>();
  private entries = 0;

  get size(): number {
    return this.entries;
  }

  record(t: GatewayToken, route: string, resource: string, ip: string, nowMs: number): void {
    let byJti = this.pending.get(route);
    if (!byJti) {
      byJti = new Map();
      this.pending.set(route, byJti);
    }
    const e = byJti.get(t.jti);
    if (e) {
      e.count++;
      e.last = nowMs;
      if (e.ips.length < MAX_IPS) {
        if (!e.ips.includes(ip)) e.ips.push(ip);
      } else if (!e.ips.includes(ip)) e.moreIps++;
      return;
    }
    byJti.set(t.jti, { token: t, route, resource, count: 1, first: nowMs, last: nowMs, ips: [ip], moreIps: 0 });
    this.entries++;
  }

  /** Takes everything recorded since the last drain, as gateway.usage events. */
  drain(nowMs: number): SecurityEvent[] {
    if (this.entries === 0) return [];
    const out: SecurityEvent[] = [];
    for (const byJti of this.pending.values())
      for (const e of byJti.values())
        out.push({
          type: 'gateway.usage',
          at: nowMs,
          client_id: e.token.clientId,
          subject: e.token.sub,
          jti: e.token.jti,
          grant_id: e.token.grantId ?? null,
          // The column holds the first address seen (so --ip timelines find it); data.ips lists them all.
          ip: e.ips[0] ?? null,
          data: {
            route: e.route,
            resource: e.resource,
            count: e.count,
            first_seen: e.first,
            last_seen: e.last,
            ips: e.ips,
            ...(e.moreIps ? { unlisted_ip_requests: e.moreIps } : {}),
          },
        });
    this.pending = new Map();
    this.entries = 0;
    return out;
  }
}
