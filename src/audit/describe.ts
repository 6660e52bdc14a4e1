import type { AuditEventRow } from '../storage/ports.ts';

/**
 * Human wording for events: one short sentence per event, used by timelines (`portcullis audit timeline`, the admin
 * API) and as the OCSF `message` of exported records. Pure functions over the stored row.
 */

/** Where an event sits in a token's story. */
export type StoryKind = 'issued' | 'refreshed' | 'used' | 'denied' | 'revoked' | 'alert' | 'other';

/**
 * Alerts: a spent code or refresh token presented again (two parties hold it), a replayed client assertion, and
 * every `alert.*` event (the detection module writes those; they carry the same correlation columns).
 */
export function isAlert(type: string): boolean {
  return type.startsWith('alert.') || type.endsWith('.reused') || type.endsWith('.replayed');
}

export function storyKind(type: string): StoryKind {
  if (isAlert(type)) return 'alert';
  switch (type) {
    case 'token.issued':
    case 'refresh_token.issued':
    case 'authorization_code.issued':
    case 'grant.created':
    case 'device_code.redeemed':
    case 'authorization_code.redeemed':
      return 'issued';
    case 'refresh_token.rotated':
      return 'refreshed';
    case 'gateway.usage':
    case 'token.introspected':
      return 'used';
    case 'gateway.denied':
    case 'token.failed':
      return 'denied';
    case 'token.revoked':
    case 'grant.revoked':
    case 'key.revoked':
      return 'revoked';
    default:
      return 'other';
  }
}

export function parseData(row: Pick<AuditEventRow, 'data'>): Record<string, unknown> {
  try {
    const v = JSON.parse(row.data) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

const str = (v: unknown): string => (v === undefined || v === null ? '' : Array.isArray(v) ? v.join(' ') : String(v));
const iso = (ms: unknown): string => (typeof ms === 'number' ? new Date(ms).toISOString() : str(ms));
const secIso = (s: unknown): string => (typeof s === 'number' ? new Date(s * 1000).toISOString() : str(s));
const short = (v: unknown, n = 12): string => {
  const s = str(v);
  return s.length > n ? `${s.slice(0, n)}…` : s;
};

/** One sentence about the event (no secrets: the event holds none). */
export function summarize(row: AuditEventRow, data: Record<string, unknown> = parseData(row)): string {
  const d = data;
  const client = row.client_id ?? '?';
  switch (row.type) {
    case 'token.issued':
      return `access token ${short(row.jti)} issued to ${client} (${str(d.grant_type)}) for ${str(d.aud)}, scope "${str(d.scope)}", expires ${secIso(d.exp)}${d.jkt ? ', DPoP-bound' : ''}`;
    case 'token.failed':
      return `token request by ${client} refused: ${str(d.error)} (${str(d.grant_type)})`;
    case 'token.revoked':
      return `revoked by ${str(d.by)}${row.jti ? ` (token ${short(row.jti)})` : ''}: ${str(d.reason)}`;
    case 'token.introspected':
      return `introspected by ${client}: ${str(d.verdict)}`;
    case 'grant.created':
      return `grant ${short(row.grant_id)} created for ${client} via ${str(d.via)}, scope "${str(d.scope)}"`;
    case 'grant.revoked':
      return `grant ${short(row.grant_id)} revoked: ${str(d.reason)}`;
    case 'authorization_code.issued':
      return `authorization code issued to ${client}, scope "${str(d.scope)}"`;
    case 'authorization_code.redeemed':
      return `authorization code redeemed by ${client}${d.refresh_token ? ' (with a refresh token)' : ''}`;
    case 'authorization_code.replayed':
      return `ALERT: authorization code presented again${d.grant_revoked ? '; grant revoked' : ''}`;
    case 'refresh_token.issued':
      return `refresh token ${str(d.ref)} issued, idle until ${iso(d.idle_expires_at)}`;
    case 'refresh_token.rotated':
      return `refreshed: refresh token ${str(d.from)} spent for ${str(d.to)}, new access token scope "${str(d.scope)}"`;
    case 'refresh_token.reused':
      return `ALERT: spent refresh token ${str(d.ref)} presented again${d.grant_revoked ? '; grant revoked' : ''}`;
    case 'gateway.usage': {
      const ips = Array.isArray(d.ips) ? d.ips.join(', ') : '';
      return `used ${str(d.count)}× at route ${str(d.route)} (${iso(d.first_seen)} … ${iso(d.last_seen)}) from ${ips}`;
    }
    case 'gateway.denied':
      return `refused at the gateway: ${str(d.reason)} (${str(d.method)} ${str(d.path)}, route ${str(d.route) || '-'}, status ${str(d.status)})`;
    case 'key.revoked':
      return `signing key ${short(d.kid, 16)} revoked: ${str(d.reason)}`;
    case 'login.succeeded':
      return `signed in as ${str(d.username)}`;
    case 'login.failed':
      return `sign-in failed for ${str(d.username)}: ${str(d.reason)}`;
    case 'session.created':
      return `session started (${str(d.amr)})`;
    case 'session.ended':
      return `session ended: ${str(d.reason)}`;
    case 'consent.granted':
      return `consent given to ${client} for "${str(d.scope)}"`;
    case 'consent.denied':
      return `consent refused to ${client}`;
    case 'consent.withdrawn':
      return `consent withdrawn from ${client}; ${str(d.grants_revoked)} grant(s) revoked`;
    case 'mfa.failed':
      return `second factor (${str(d.factor)}) failed: ${str(d.reason)}`;
    case 'mfa.enrolled':
      return `second factor enrolled: ${str(d.factor)}`;
    case 'mfa.removed':
      return `second factor removed: ${str(d.factor)}`;
    case 'client_auth.failed':
      return `client authentication failed (${str(d.method)}): ${str(d.reason)}`;
    case 'authorization.failed':
      return `authorization request refused: ${str(d.error)}`;
    case 'rate_limit.hit':
      return `rate limit ${str(d.rule)} reached`;
    default: {
      if (row.type.startsWith('alert.')) return `ALERT ${row.type}${d.summary ? `: ${str(d.summary)}` : ''}`;
      const keys = Object.keys(d).slice(0, 4);
      return keys.length ? `${row.type}: ${keys.map((k) => `${k}=${short(d[k], 40)}`).join(', ')}` : row.type;
    }
  }
}
