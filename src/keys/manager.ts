import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import type { SigningAlgorithm } from '../config/schema.ts';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { Clock } from '../lib/clock.ts';
import { encodeSegment } from '../lib/jws.ts';
import type { SigningKeyRecord, Storage, Stores } from '../storage/ports.ts';
import type { Kek } from './kek.ts';
import { SignerPool } from './signer-pool.ts';

export interface KeyPolicy {
  algorithm: SigningAlgorithm;
  /** Seconds a key signs before the next one takes over. */
  rotationPeriod: number;
  /** Seconds clients may cache the JWKS; a new key is published at least this long before it signs. */
  jwksMaxAge: number;
  /** Seconds: the longest lifetime of any token a key signs (plus clock skew); retention after it stops signing. */
  maxTokenLifetime: number;
}

export interface ActiveKey {
  kid: string;
  alg: string;
  key: KeyObject;
}

export interface RotationResult {
  created: SigningKeyRecord;
  /** The key that was signing when an emergency rotation began. */
  revoked?: string | undefined;
  /** Every key revoked by an emergency rotation (signing, pre-published next, retiring). */
  revokedAll?: string[];
}

function generate(alg: SigningAlgorithm): { privateJwk: JWK; publicJwk: JWK } {
  const pair =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : alg === 'EdDSA'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateJwk: pair.privateKey.export({ format: 'jwk' }) as JWK,
    publicJwk: pair.publicKey.export({ format: 'jwk' }) as JWK,
  };
}

/** A key is published from creation until retire_at (or revocation). */
export function isPublished(k: SigningKeyRecord, now: number): boolean {
  if (k.revoked_at !== null || k.state === 'retired' || k.state === 'revoked') return false;
  return k.retire_at === null || k.retire_at > now;
}

/**
 * Key lifecycle next -> active -> retiring -> retired (or revoked in an emergency). Which key signs is computed from
 * timestamps (the published key with the latest activates_at <= now), so every node agrees without coordination; the
 * scheduler's tick() only records the transitions (and their events) and pre-creates the next key.
 */
export class KeyManager {
  private keys: SigningKeyRecord[] = [];
  private readonly decrypted = new Map<string, { key: KeyObject }>();
  private pool: SignerPool | undefined;
  private readonly headers = new Map<string, string>();
  private readonly storage: Storage;
  private readonly kek: Kek;
  private readonly policy: KeyPolicy;
  private readonly clock: Clock;

  constructor(storage: Storage, kek: Kek, policy: KeyPolicy, clock: Clock) {
    this.storage = storage;
    this.kek = kek;
    this.policy = policy;
    this.clock = clock;
  }

  get all(): readonly SigningKeyRecord[] {
    return this.keys;
  }

  async reload(): Promise<void> {
    this.keys = await this.storage.keys.list();
  }

  /** Loads keys, creating the first one if none can sign, and checks the KEK opens the signing key. */
  async init(): Promise<void> {
    await this.reload();
    if (!this.signingRecord()) {
      await this.storage.withTransaction(async (tx) => {
        const now = this.clock.nowMs();
        const rec = await this.createKey(tx, now, now, 'startup');
        await tx.events.append(this.event('key.activated', rec, now, 'startup', {}));
      });
      await this.reload();
    }
    this.current();
  }

  private event(
    type: SecurityEvent['type'],
    k: SigningKeyRecord,
    at: number,
    actor: string,
    data: Record<string, unknown>,
  ): SecurityEvent {
    return { type, at, actor, data: { kid: k.kid, alg: k.alg, ...data } };
  }

  private async createKey(tx: Stores, now: number, activatesAt: number, actor: string): Promise<SigningKeyRecord> {
    const { privateJwk, publicJwk } = generate(this.policy.algorithm);
    const kid = await calculateJwkThumbprint(publicJwk, 'sha256');
    const rec: SigningKeyRecord = {
      kid,
      alg: this.policy.algorithm,
      state: activatesAt <= now ? 'active' : 'next',
      public_jwk: { ...publicJwk, kid, alg: this.policy.algorithm, use: 'sig' },
      private_enc: this.kek.encrypt(JSON.stringify(privateJwk), kid),
      created_at: now,
      activates_at: activatesAt,
      deactivated_at: null,
      retire_at: null,
      revoked_at: null,
    };
    await tx.keys.insert(rec);
    await tx.events.append(
      this.event('key.created', rec, now, actor, { activates_at: new Date(activatesAt).toISOString() }),
    );
    return rec;
  }

  private signingRecord(now = this.clock.nowMs()): SigningKeyRecord | undefined {
    let best: SigningKeyRecord | undefined;
    for (const k of this.keys) {
      if (!isPublished(k, now) || k.activates_at > now) continue;
      if (!best || k.activates_at > best.activates_at) best = k;
    }
    return best;
  }

  /** The key that signs now. */
  current(): ActiveKey {
    const rec = this.signingRecord();
    if (!rec) throw new Error('no signing key is active');
    let entry = this.decrypted.get(rec.kid);
    if (!entry) {
      let jwk: JWK;
      try {
        jwk = JSON.parse(this.kek.decrypt(rec.private_enc, rec.kid));
      } catch {
        throw new Error(
          `cannot decrypt signing key ${rec.kid}: the key-encryption key (${this.kek.source}) is not the one it was stored under`,
        );
      }
      const key = createPrivateKey({ key: jwk as never, format: 'jwk' });
      entry = { key };
      this.decrypted.set(rec.kid, entry);
    }
    return { kid: rec.kid, alg: rec.alg, ...entry };
  }

  /**
   * Signs a JWT with the key that signs now, on the signer worker pool (started on first use, so CLI commands
   * never start threads). The header gets alg and kid; typ comes from the caller.
   */
  async signJwt(
    typ: string,
    claims: Record<string, unknown>,
    k: ActiveKey = this.current(),
  ): Promise<{ token: string; kid: string }> {
    this.pool ??= new SignerPool();
    const hk = `${k.kid} ${typ}`;
    let header = this.headers.get(hk);
    if (header === undefined) {
      header = encodeSegment({ alg: k.alg, typ, kid: k.kid });
      this.headers.set(hk, header);
    }
    const input = `${header}.${encodeSegment(claims)}`;
    return { token: await this.pool.sign(k.kid, k.alg, k.key, input), kid: k.kid };
  }

  /** Stops the signer threads. */
  async close(): Promise<void> {
    await this.pool?.close();
    this.pool = undefined;
  }

  /** Public keys currently published, newest first. */
  jwks(): { keys: Record<string, unknown>[] } {
    const now = this.clock.nowMs();
    return {
      keys: this.keys
        .filter((k) => isPublished(k, now))
        .sort((a, b) => b.activates_at - a.activates_at)
        .map((k) => k.public_jwk),
    };
  }

  /** A kid may verify a token iff it is published and was never revoked. */
  isTrustedKid(kid: string): boolean {
    const k = this.keys.find((x) => x.kid === kid);
    return !!k && isPublished(k, this.clock.nowMs());
  }

  publicJwk(kid: string): Record<string, unknown> | undefined {
    const k = this.keys.find((x) => x.kid === kid);
    return k && isPublished(k, this.clock.nowMs()) ? k.public_jwk : undefined;
  }

  /**
   * Records due transitions and pre-publishes the next key. Safe to run on several nodes at once: every transition
   * is a compare-and-set on the key's state, and the next key is created only when none exists.
   */
  async tick(): Promise<string[]> {
    await this.reload();
    const now = this.clock.nowMs();
    const done: string[] = [];
    const signing = this.signingRecord(now);
    await this.storage.withTransaction(async (tx) => {
      for (const k of this.keys) {
        if (k.state === 'next' && k.activates_at <= now && (await tx.keys.transition(k.kid, 'next', 'active', {}))) {
          await tx.events.append(this.event('key.activated', k, now, 'scheduler', {}));
          done.push(`activated ${k.kid}`);
        }
      }
      for (const k of this.keys) {
        if (k.state === 'active' && signing && k.kid !== signing.kid && k.activates_at < signing.activates_at) {
          const retireAt = signing.activates_at + this.policy.maxTokenLifetime * 1000;
          if (
            await tx.keys.transition(k.kid, 'active', 'retiring', {
              deactivated_at: signing.activates_at,
              retire_at: retireAt,
            })
          ) {
            await tx.events.append(
              this.event('key.deactivated', k, now, 'scheduler', {
                replaced_by: signing.kid,
                retire_at: new Date(retireAt).toISOString(),
              }),
            );
            done.push(`retiring ${k.kid} until ${new Date(retireAt).toISOString()}`);
          }
        }
        if (
          k.state === 'retiring' &&
          k.retire_at !== null &&
          k.retire_at <= now &&
          (await tx.keys.transition(k.kid, 'retiring', 'retired', {}))
        ) {
          await tx.events.append(this.event('key.retired', k, now, 'scheduler', {}));
          done.push(`retired ${k.kid}`);
        }
      }
      const hasNext = this.keys.some((k) => k.state === 'next' && k.activates_at > now && k.revoked_at === null);
      if (signing && !hasNext) {
        const due = signing.activates_at + this.policy.rotationPeriod * 1000;
        const lead = 2 * this.policy.jwksMaxAge * 1000;
        if (now >= due - lead) {
          const activatesAt = Math.max(due, now + this.policy.jwksMaxAge * 1000);
          const rec = await this.createKey(tx, now, activatesAt, 'scheduler');
          done.push(`pre-published ${rec.kid}, signs from ${new Date(activatesAt).toISOString()}`);
        }
      }
    });
    await this.reload();
    return done;
  }

  /**
   * Manual rotation. Normal: a new key is published now and signs after one JWKS max-age (clients have had time to
   * see it). Emergency: the new key signs at once and the current one is revoked: it leaves the JWKS and every token
   * it signed fails introspection from now on.
   */
  async rotate(opts: { emergency: boolean; actor: string; reason?: string }): Promise<RotationResult> {
    await this.reload();
    const now = this.clock.nowMs();
    const signing = this.signingRecord(now);
    const result = await this.storage.withTransaction(async (tx) => {
      if (!opts.emergency) {
        const pending = this.keys.find((k) => k.state === 'next' && k.revoked_at === null && k.activates_at > now);
        if (pending) return { created: pending };
        const rec = await this.createKey(tx, now, now + this.policy.jwksMaxAge * 1000, opts.actor);
        return { created: rec };
      }
      const rec = await this.createKey(tx, now, now, opts.actor);
      await tx.events.append(this.event('key.activated', rec, now, opts.actor, { emergency: true }));
      // Every key that existed before the incident is suspect (whatever leaked the signing key may have leaked the
      // pre-published next key or a retiring one too): all leave the JWKS and everything they signed is refused.
      const suspects = this.keys.filter((k) => isPublished(k, now));
      const reason = opts.reason ?? 'emergency key rotation';
      for (const k of suspects) {
        await tx.keys.transition(k.kid, k.state, 'revoked', {
          revoked_at: now,
          deactivated_at: k.deactivated_at ?? now,
        });
        await tx.revocations.add({
          kind: 'kid',
          value: k.kid,
          revoked_at: now,
          expires_at: now + this.policy.maxTokenLifetime * 1000,
          reason,
        });
        await tx.events.append(
          this.event('key.revoked', k, now, opts.actor, { reason, replaced_by: rec.kid, was: k.state }),
        );
      }
      return { created: rec, revoked: signing?.kid, revokedAll: suspects.map((k) => k.kid) };
    });
    await this.reload();
    return result;
  }
}
