import type { RevocationKind, RevocationRecord } from '../ports.ts';

/** What a bus channel reports to the revocation feed (src/oauth/revocation-feed.ts). */
export interface BusHandlers {
  /** A committed revocation; `{ id }` alone when the payload was too long to carry it (read the table). */
  revocation(r: RevocationRecord | { id: number }): void;
  /** Keys, clients or users changed: reload them. */
  control(table: string): void;
  /** The channel is subscribed: from now on it delivers every commit. */
  up(): void;
  /** The channel lost its connection; it reconnects by itself. */
  down(err: unknown): void;
}

/** One way revocations travel between nodes (PostgreSQL LISTEN/NOTIFY, Redis pub/sub). */
export interface BusChannel {
  readonly name: string;
  start(h: BusHandlers): void;
  /** Announces revocations this process committed (channels fed by a database trigger do nothing). */
  publish(recs: RevocationRecord[]): void;
  close(): Promise<void>;
}

const KINDS = new Set<RevocationKind>(['jti', 'grant', 'client', 'subject', 'kid']);

/** Validates a revocation received from outside the process; undefined for anything malformed. */
export function parseRevocation(v: unknown): RevocationRecord | { id: number } | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  const id = Number(o.id);
  if (!Number.isSafeInteger(id) || id <= 0) return undefined;
  if (o.kind === undefined) return { id };
  const revokedAt = Number(o.revoked_at);
  const expiresAt = Number(o.expires_at);
  if (!KINDS.has(o.kind as RevocationKind) || typeof o.value !== 'string') return undefined;
  if (!Number.isFinite(revokedAt) || !Number.isFinite(expiresAt)) return undefined;
  return {
    id,
    kind: o.kind as RevocationKind,
    value: o.value,
    revoked_at: revokedAt,
    expires_at: expiresAt,
    reason: typeof o.reason === 'string' ? o.reason : null,
  };
}
