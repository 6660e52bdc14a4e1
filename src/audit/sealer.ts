import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Kek } from '../keys/kek.ts';
import type { Clock } from '../lib/clock.ts';
import type { AuditKeyRecord, CheckpointRecord, Storage } from '../storage/ports.ts';
import { eventLeafHash } from './entry.ts';
import { Frontier } from './merkle.ts';
import {
  generateAuditKeyPem,
  keyId,
  type ParsedVerifierKey,
  parseVerifierKey,
  privateKeyFromPem,
  signCheckpoint,
  verifierKey,
} from './note.ts';

/** Events sealed per transaction; a round runs as many as it takes to empty the backlog. */
const CHUNK = 500;

/** The log's origin (checkpoint line 1 and the audit key's name): audit.origin, else the issuer's host/path + /audit. */
export function auditOrigin(config: Pick<Config, 'issuer' | 'audit' | 'gateway'>): string {
  if (config.audit.origin) return config.audit.origin;
  const u = new URL(config.issuer);
  // A gateway node (gateway.remote: `--role gateway`) keeps its own log, apart from the authorization server's.
  return `${u.host}${u.pathname.replace(/\/+$/, '')}/audit${config.gateway?.remote ? '/gateway' : ''}`;
}

export function keyRecordVerifier(k: AuditKeyRecord): ParsedVerifierKey {
  return parseVerifierKey(verifierKey(k.name, Buffer.from(k.public_key, 'base64')));
}

/**
 * Loads the audit signing key (the newest that is not retired), creating one on first use: Ed25519, its private half
 * encrypted under the KEK, `audit_key.created` written in the same transaction.
 */
export async function ensureAuditKey(
  storage: Storage,
  kek: Kek,
  origin: string,
  clock: Clock,
  actor: string,
): Promise<{ record: AuditKeyRecord; privateKey: KeyObject }> {
  const record = await storage.withTransaction(async (tx) => {
    await tx.audit.lockSealer(true);
    const current = (await tx.audit.keys()).filter((k) => k.retired_at === null && k.name === origin).at(-1);
    if (current) return current;
    const { privatePem, raw } = generateAuditKeyPem();
    const id = keyId(origin, raw).toString('hex');
    const rec: AuditKeyRecord = {
      key_id: id,
      name: origin,
      public_key: raw.toString('base64'),
      private_key: kek.encrypt(privatePem, `audit-key:${id}`),
      created_at: clock.nowMs(),
      retired_at: null,
    };
    await tx.audit.addKey(rec);
    await tx.events.append({
      type: 'audit_key.created',
      at: rec.created_at,
      actor,
      data: { key_id: id, name: origin, verifier_key: verifierKey(origin, raw) },
    });
    return rec;
  });
  let pem: string;
  try {
    pem = kek.decrypt(record.private_key, `audit-key:${record.key_id}`);
  } catch {
    throw new Error(
      `cannot decrypt audit key ${record.key_id}: the key-encryption key (${kek.source}) is not the one it was stored under`,
    );
  }
  return { record, privateKey: privateKeyFromPem(pem) };
}

export interface SealResult {
  /** Events sealed by this call. */
  sealed: number;
  /** The checkpoint signed by this call, if any. */
  checkpoint?: CheckpointRecord;
  /** False when another sealer held the lock (nothing was done). */
  leader: boolean;
}

/**
 * The sealer: appends committed events to the audit Merkle tree in the order it finds them (oldest id first among
 * the unsealed), each chunk in one transaction that also stores the tree's frontier, and signs one checkpoint per
 * round over everything sealed so far. Holding the sealer lock for each transaction keeps one sealer at a time
 * (across processes: SQLite's write lock; across nodes: a PostgreSQL advisory lock). Leaf order is commit
 * discovery order, not id order: an event whose transaction commits late is sealed in a later round.
 */
export class Sealer {
  private readonly storage: Storage;
  private readonly clock: Clock;
  private readonly origin: string;
  private readonly key: { record: AuditKeyRecord; privateKey: KeyObject };
  private readonly log: Logger | undefined;
  private readonly listeners: Array<(c: CheckpointRecord) => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    storage: Storage,
    clock: Clock,
    origin: string,
    key: { record: AuditKeyRecord; privateKey: KeyObject },
    log?: Logger,
  ) {
    this.storage = storage;
    this.clock = clock;
    this.origin = origin;
    this.key = key;
    this.log = log;
  }

  /** While sealing a backlog, a checkpoint is signed at least this often (start() sets it to its interval). */
  checkpointIntervalMs = 1000;

  get verifierKey(): string {
    return verifierKey(this.key.record.name, Buffer.from(this.key.record.public_key, 'base64'));
  }

  /** Called after each checkpoint commits (sinks outside the database). */
  onCheckpoint(listener: (c: CheckpointRecord) => void): void {
    this.listeners.push(listener);
  }

  /** Seals every event committed so far and signs a checkpoint over them when anything was sealed. */
  async sealOnce(): Promise<SealResult> {
    let sealed = 0;
    let checkpoint: CheckpointRecord | undefined;
    let signedAt = performance.now();
    for (let chunk = 0; ; chunk++) {
      // Between chunks, let requests run (the sealer shares the main thread with them).
      if (chunk > 0) await new Promise((resolve) => setImmediate(resolve));
      // While working through a backlog, still sign a checkpoint every interval (at most one per interval).
      const due = performance.now() - signedAt >= this.checkpointIntervalMs;
      const r = await this.storage.withTransaction(async (tx) => {
        if (!(await tx.audit.lockSealer(false))) return { leader: false as const };
        const text = await tx.meta.get('audit_frontier');
        const frontier = Frontier.fromJSON(JSON.parse(text ?? '{"size":0,"hashes":[]}'));
        const rows = await tx.audit.unsealed(CHUNK);
        const pairs: Array<{ id: number; leaf: number; hash: string }> = new Array(rows.length);
        for (let i = 0; i < rows.length; i++) {
          const row = rows[i] as (typeof rows)[number];
          const hash = eventLeafHash(row);
          pairs[i] = { id: row.id, leaf: frontier.size, hash: hash.toString('base64') };
          frontier.append(hash);
        }
        if (rows.length > 0) {
          await tx.audit.assignLeaves(pairs);
          await tx.meta.set('audit_frontier', JSON.stringify(frontier.toJSON()));
        }
        let cp: CheckpointRecord | undefined;
        const last = rows.length < CHUNK;
        if (last || due) {
          // A checkpoint when the tree grew since the newest one (or the very first, over the empty tree).
          const latest = await tx.audit.latestCheckpoint();
          if (!latest || latest.tree_size < frontier.size) cp = await this.sign(frontier, tx.audit);
        }
        return { leader: true as const, n: rows.length, last, cp };
      });
      if (!r.leader) return { sealed, leader: false };
      sealed += r.n;
      if (r.cp) {
        checkpoint = r.cp;
        signedAt = performance.now();
        for (const l of this.listeners) {
          try {
            l(r.cp);
          } catch (e) {
            this.log?.error({ err: e }, 'checkpoint listener failed');
          }
        }
      }
      if (r.last) return { sealed, checkpoint, leader: true };
    }
  }

  private async sign(frontier: Frontier, audit: Storage['audit']): Promise<CheckpointRecord> {
    const root = frontier.root();
    const at = this.clock.nowMs();
    const note = signCheckpoint(
      { origin: this.origin, size: frontier.size, root, time: at },
      this.key.record.name,
      this.key.privateKey,
    );
    const rec: CheckpointRecord = {
      tree_size: frontier.size,
      root_hash: root.toString('base64'),
      at,
      key_id: this.key.record.key_id,
      note,
    };
    await audit.addCheckpoint(rec);
    return rec;
  }

  /** Seals every intervalMs until stop(). */
  start(intervalMs: number): void {
    this.checkpointIntervalMs = intervalMs;
    const tick = () => {
      if (this.stopped) return;
      this.running = this.sealOnce()
        .catch((e) => this.log?.error({ err: e }, 'audit sealing failed; retrying next interval'))
        .finally(() => {
          this.running = undefined;
          if (!this.stopped) this.timer = setTimeout(tick, intervalMs);
        });
    };
    this.timer = setTimeout(tick, intervalMs);
    this.timer.unref?.();
  }

  /** Stops the loop after sealing what is committed (a clean shutdown leaves nothing unsealed). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    try {
      await this.sealOnce();
    } catch (e) {
      this.log?.error({ err: e }, 'final audit sealing failed');
    }
  }
}
