/**
 * The event catalogue. Every security-relevant action produces exactly one of these, written in the same
 * transaction as the state change it describes. Names are entity.action. docs/events.md documents each.
 */
export const EVENT_TYPES = [
  'token.issued',
  'token.failed',
  'token.revoked',
  'token.introspected',
  'client_auth.failed',
  'client_assertion.replayed',
  'client.created',
  'client.updated',
  'client.deleted',
  'user.created',
  'user.updated',
  'user.disabled',
  'user.enabled',
  'password.changed',
  'login.succeeded',
  'login.failed',
  'account.locked',
  'account.unlocked',
  'rate_limit.hit',
  'mfa.enrolled',
  'mfa.failed',
  'mfa.removed',
  'session.created',
  'session.ended',
  'consent.granted',
  'consent.denied',
  'consent.withdrawn',
  'authorization.failed',
  'par.created',
  'authorization_code.issued',
  'authorization_code.redeemed',
  'authorization_code.replayed',
  'grant.created',
  'grant.revoked',
  'refresh_token.issued',
  'refresh_token.rotated',
  'refresh_token.reused',
  'device_code.issued',
  'device_code.approved',
  'device_code.denied',
  'device_code.redeemed',
  'device_code.verification_failed',
  'key.created',
  'key.activated',
  'key.deactivated',
  'key.retired',
  'key.revoked',
  'audit_key.created',
  'audit.archived',
  'audit.pruned',
  'revocation.feed_lost',
  'revocation.feed_restored',
  'gateway.denied',
  'gateway.usage',
  'config.applied',
  'storage.migrated',
  'server.started',
  'server.stopped',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export interface SecurityEvent {
  type: EventType;
  /** Milliseconds since the epoch, from the injectable clock. */
  at: number;
  client_id?: string | null;
  /** The subject (user id, or the client id for client_credentials). */
  subject?: string | null;
  jti?: string | null;
  grant_id?: string | null;
  /** The browser session (sign-in) the action belongs to. */
  session_id?: string | null;
  /** The client IP address of the request that caused the event. */
  ip?: string | null;
  /** Correlates the event with the HTTP request that caused it (also in logs). */
  request_id?: string | null;
  /** The actor that caused an administrative change: "config", "cli", "scheduler", a client id… */
  actor?: string | null;
  data: Record<string, unknown>;
}

export interface StoredEvent extends SecurityEvent {
  id: number;
  /** Position in the audit Merkle tree; null until the sealer has sealed the event. */
  leaf_index?: number | null;
}
