import type { SecurityEvent } from '../events/catalogue.ts';
import type { RevocationKind, RevocationRecord, RevocationStore, Stores } from '../storage/ports.ts';

export interface RevocationRequest {
  kind: Exclude<RevocationKind, 'kid'>;
  value: string;
  at: number;
  /** When every token the revocation covers has expired (ms): the record can be purged then. */
  expiresAt: number;
  reason: string;
  actor: string;
  /** Extra correlation for the event (the token's client and subject, the request id). */
  event?: Partial<Pick<SecurityEvent, 'client_id' | 'subject' | 'grant_id' | 'request_id' | 'ip' | 'session_id'>> & {
    data?: Record<string, unknown>;
  };
}

/**
 * Writes a revocation and its token.revoked event in the caller's transaction: the one place tokens are revoked
 * by jti, client or subject (the endpoint, the CLI, later the playbooks).
 */
export async function recordRevocation(tx: Stores, r: RevocationRequest): Promise<RevocationRecord> {
  const rec = await tx.revocations.add({
    kind: r.kind,
    value: r.value,
    revoked_at: r.at,
    expires_at: r.expiresAt,
    reason: r.reason,
  });
  await tx.events.append({
    type: 'token.revoked',
    at: r.at,
    actor: r.actor,
    request_id: r.event?.request_id ?? null,
    ip: r.event?.ip ?? null,
    session_id: r.event?.session_id ?? null,
    jti: r.kind === 'jti' ? r.value : null,
    grant_id: r.kind === 'grant' ? r.value : (r.event?.grant_id ?? null),
    client_id: r.kind === 'client' ? r.value : (r.event?.client_id ?? null),
    subject: r.kind === 'subject' ? r.value : (r.event?.subject ?? null),
    data: { by: r.kind, reason: r.reason, ...r.event?.data },
  });
  return rec;
}

export interface TokenIdentity {
  jti: string;
  /** Issued-at, seconds. */
  iat: number;
  client_id: string;
  sub: string;
  kid: string;
  grant_id?: string | undefined;
}

/**
 * The live revocation set, held in memory. It is kept current by the bus (src/oauth/revocation-feed.ts: PostgreSQL
 * LISTEN/NOTIFY, Redis pub/sub, this process's own commits) and, while the bus is down or absent, by tailing the
 * revocations table. By jti, grant and kid a token is dead outright; by client and subject, every token issued at
 * or before the revocation is dead, so a re-enabled client or user can get fresh tokens.
 */
export class RevocationSet {
  private readonly byKey = new Map<string, RevocationRecord>();
  private lastId = 0;
  private readonly source: Pick<RevocationStore, 'listAfter'>;
  /**
   * Since when (ms) no bus channel has been delivering; undefined while one is (or when there is no bus: SQLite,
   * where every writer shares this machine and polling is a PRAGMA). A gateway fails closed past the bound.
   */
  feedDownSince: number | undefined;
  /** True while every bus channel is connected: then nothing needs polling (the bus brings each revocation). */
  busLive = false;
  /** Poll the table while the bus is not live (false only in tests that prove the bus). */
  pollWhenDown = true;
  /** How long (ms) the feed may be down before healthy() says no (config revocation.max_feed_lag). */
  maxFeedLagMs = 5000;

  private waiters = new Set<() => void>();
  private released = false;

  constructor(source: Pick<RevocationStore, 'listAfter'>) {
    this.source = source;
  }

  /** Resolves at the next change (a revocation added, or notify()), or after ms. For long-polling readers. */
  changed(ms: number): Promise<void> {
    if (this.released) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /** Wakes every changed() waiter (keys changed, or the feed's health did). */
  notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Shutting down: wake every waiter now and let later ones return at once. */
  release(): void {
    this.released = true;
    this.notify();
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Revocations may be missed for longer than the bound: a gateway must refuse every token. */
  healthy(nowMs: number): boolean {
    return this.feedDownSince === undefined || nowMs - this.feedDownSince <= this.maxFeedLagMs;
  }

  /** Whether requests that must see the latest revocations should read the table first. */
  get needsPolling(): boolean {
    return !this.busLive && this.pollWhenDown;
  }

  private static key(kind: RevocationKind, value: string): string {
    return `${kind}\u0000${value}`;
  }

  add(r: RevocationRecord): void {
    const k = RevocationSet.key(r.kind, r.value);
    const prev = this.byKey.get(k);
    if (!prev || prev.revoked_at < r.revoked_at) this.byKey.set(k, r);
    if (r.id > this.lastId) this.lastId = r.id;
    if (this.waiters.size) this.notify();
  }

  /** Reads revocations written since the last sync (by this or any other process), or after the given id. */
  async sync(after = this.lastId): Promise<number> {
    return this.readFrom(after);
  }

  /**
   * Reads the whole live table again. After the bus was down: ids are allocated at insert but become visible at
   * commit, so a revocation with a lower id than one already seen can commit later; tailing by id would skip it.
   */
  async reconcile(): Promise<number> {
    return this.readFrom(0);
  }

  private async readFrom(after: number): Promise<number> {
    let n = 0;
    let from = after;
    for (;;) {
      const rows = await this.source.listAfter(from, 5000);
      for (const r of rows) this.add(r);
      n += rows.length;
      const last = rows.at(-1);
      if (rows.length < 5000 || !last) return n;
      from = last.id;
    }
  }

  purge(nowMs: number): void {
    for (const [k, r] of this.byKey) if (r.expires_at < nowMs) this.byKey.delete(k);
  }

  /** Returns the revocation that kills this token, if any. */
  check(t: TokenIdentity): RevocationRecord | undefined {
    const direct = [
      this.byKey.get(RevocationSet.key('jti', t.jti)),
      this.byKey.get(RevocationSet.key('kid', t.kid)),
      t.grant_id ? this.byKey.get(RevocationSet.key('grant', t.grant_id)) : undefined,
    ].find(Boolean);
    if (direct) return direct;
    for (const r of [
      this.byKey.get(RevocationSet.key('client', t.client_id)),
      this.byKey.get(RevocationSet.key('subject', t.sub)),
    ]) {
      if (r && t.iat * 1000 <= r.revoked_at) return r;
    }
    return undefined;
  }
}
