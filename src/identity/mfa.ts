import { randomBytes } from 'node:crypto';
import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  generateRegistrationOptions,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import type { Config } from '../config/schema.ts';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { Kek } from '../keys/kek.ts';
import type { Clock } from '../lib/clock.ts';
import { sha256Hex } from '../lib/crypto.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../oauth/context.ts';
import type { ClientRecord, Storage, Stores, UserRecord } from '../storage/ports.ts';
import { ACR_PASSWORD, type LoadedSession } from './sessions.ts';
import { base32Decode, matchTotp, newTotpSecret, otpauthUri, totpStep } from './totp.ts';

/**
 * Multi-factor authentication (NIST SP 800-63B-4): the second step after the password.
 *
 * Levels, asserted as the `acr` claim (OIDC Core §2) and requested with acr_values (OIDC Core §3.1.2.1):
 *   "1" password only (AAL1);
 *   "2" password + a second factor: TOTP (§3.1.7 single-factor OTP) or a recovery code (§3.1.4 look-up secret)
 *       (AAL2);
 *   "3" password + a passkey with user verification (WebAuthn, §3.2.5 phishing resistance: the signature is bound
 *       to this origin, so a look-alike site cannot relay it).
 * amr values follow RFC 8176 §2: pwd, otp, hwk, user (user verification), mfa; a recovery code adds "rcv"
 * (RFC 8176 allows values outside its registry; it has none for look-up secrets).
 *
 * Wrong codes are counted per account in storage, so every session and every node sees the same count
 * (§3.2.2 rate limiting); after mfa.max_failures the factor step is locked for mfa.lock_period, even for a right
 * code. A TOTP code is accepted once: the last accepted time step is stored and only a later one passes.
 */

export const ACR_MFA = '2';
export const ACR_PHISHING_RESISTANT = '3';
export const ACR_VALUES_SUPPORTED = [ACR_PASSWORD, ACR_MFA, ACR_PHISHING_RESISTANT];

export type MfaLevel = 1 | 2 | 3;

export function acrLevel(acr: string | null | undefined): MfaLevel {
  if (acr === ACR_PHISHING_RESISTANT) return 3;
  if (acr === ACR_MFA) return 2;
  return 1;
}

export function levelAcr(level: MfaLevel): string {
  return level === 3 ? ACR_PHISHING_RESISTANT : level === 2 ? ACR_MFA : ACR_PASSWORD;
}

export interface MfaStatus {
  totp: boolean;
  passkeys: number;
  recoveryCodes: number;
  /** Any factor that can pass the second step. */
  enrolled: boolean;
}

export async function mfaStatus(stores: Stores, userId: string): Promise<MfaStatus> {
  const [totp, creds, recovery] = await Promise.all([
    stores.mfa.getTotp(userId),
    stores.mfa.listCredentials(userId),
    stores.mfa.countRecoveryCodes(userId),
  ]);
  const t = !!totp?.confirmed;
  return { totp: t, passkeys: creds.length, recoveryCodes: recovery, enrolled: t || creds.length > 0 };
}

/**
 * The level a request needs (policy, OIDC Core §3.1.2.1 acr_values as a request for more, never less):
 * a phishing-resistant scope -> 3; acr_values -> the weakest value asked for that we know; mfa.required, the
 * client's require_mfa, or a user who has enrolled a factor (mfa.require_enrolled) -> 2; otherwise 1.
 */
export function requiredLevel(
  config: Config,
  o: { client?: ClientRecord | undefined; scopes?: string[]; acrValues?: string[]; enrolled: boolean },
): MfaLevel {
  let level: MfaLevel = 1;
  const raise = (l: MfaLevel) => {
    if (l > level) level = l;
  };
  if (config.mfa.required || o.client?.metadata.require_mfa === true) raise(2);
  if (o.enrolled && config.mfa.require_enrolled) raise(2);
  const known = (o.acrValues ?? []).filter((v) => ACR_VALUES_SUPPORTED.includes(v)).map(acrLevel);
  if (known.length) raise(Math.min(...known) as MfaLevel);
  if (o.scopes?.some((s) => config.mfa.phishing_resistant_scopes.includes(s))) raise(3);
  return level;
}

/**
 * What the session lacks for this request: undefined when its acr meets the required level. Checked before consent
 * and again when the consent form is posted, so a password-only session reaches neither consent nor a code.
 */
export async function mfaGap(
  ctx: OAuthContext,
  session: LoadedSession,
  o: { client: ClientRecord | undefined; scopes: string[]; acrValues: string[] },
): Promise<{ level: MfaLevel; enrolled: boolean } | undefined> {
  const status = await mfaStatus(ctx.storage, session.user!.id);
  const level = requiredLevel(ctx.config, { ...o, enrolled: status.enrolled });
  return acrLevel(session.record.acr) >= level ? undefined : { level, enrolled: status.enrolled };
}

// --------------------------------------------------------------------------------------------------------------
// Failure counting and lock.

export type FactorFailure = 'wrong_code' | 'replayed' | 'locked' | 'not_enrolled' | 'invalid_response';

export type FactorOutcome =
  | { ok: true; amr: string[]; level: MfaLevel }
  | { ok: false; reason: FactorFailure; retryAfter?: number };

function failedEvent(
  ctx: OAuthContext,
  user: UserRecord,
  factor: string,
  reason: FactorFailure,
  meta: RequestMeta,
  extra: Record<string, unknown> = {},
): SecurityEvent {
  return {
    type: 'mfa.failed',
    at: ctx.clock.nowMs(),
    subject: user.id,
    ...correlation(meta),
    data: { factor, reason, ip: meta.ip, user_agent: meta.userAgent?.slice(0, 200) ?? null, ...extra },
  };
}

/** Seconds left on the factor lock, or 0. */
export async function lockedFor(ctx: OAuthContext, userId: string): Promise<number> {
  const f = await ctx.storage.mfa.getFailures(userId);
  const now = ctx.clock.nowMs();
  return f?.locked_until && f.locked_until > now ? Math.ceil((f.locked_until - now) / 1000) : 0;
}

/** Counts one failure (per account, across sessions) and locks the step at mfa.max_failures; writes mfa.failed. */
async function recordFailure(
  ctx: OAuthContext,
  user: UserRecord,
  factor: string,
  reason: FactorFailure,
  meta: RequestMeta,
): Promise<FactorOutcome> {
  const cfg = ctx.config.mfa;
  const now = ctx.clock.nowMs();
  return ctx.storage.withTransaction(async (tx) => {
    const count = await tx.mfa.addFailure(user.id, now, cfg.lock_period * 1000);
    const lock = count >= cfg.max_failures;
    if (lock) await tx.mfa.lock(user.id, now + cfg.lock_period * 1000, now);
    await tx.events.append(
      failedEvent(ctx, user, factor, reason, meta, {
        failures: count,
        locked: lock,
        ...(lock ? { lock_period_s: cfg.lock_period } : {}),
      }),
    );
    return lock ? { ok: false, reason: 'locked', retryAfter: cfg.lock_period } : { ok: false, reason };
  });
}

async function refuseIfLocked(
  ctx: OAuthContext,
  user: UserRecord,
  factor: string,
  meta: RequestMeta,
): Promise<FactorOutcome | undefined> {
  const wait = await lockedFor(ctx, user.id);
  if (!wait) return undefined;
  // Even a right code is refused while locked: otherwise the lock would only slow guessing down.
  await ctx.storage.events.append(failedEvent(ctx, user, factor, 'locked', meta));
  return { ok: false, reason: 'locked', retryAfter: wait };
}

// --------------------------------------------------------------------------------------------------------------
// TOTP.

const totpAad = (userId: string) => `totp:${userId}`;

function decryptSecret(kek: Kek, userId: string, enc: string): string {
  return kek.decrypt(enc, totpAad(userId));
}

/** Checks a TOTP code at the factor step: lock, match within one step, single use (compare-and-set on the step). */
export async function verifyTotp(
  ctx: OAuthContext,
  user: UserRecord,
  code: string,
  meta: RequestMeta,
): Promise<FactorOutcome> {
  const locked = await refuseIfLocked(ctx, user, 'totp', meta);
  if (locked) return locked;
  const t = await ctx.storage.mfa.getTotp(user.id);
  if (!t?.confirmed) return recordFailure(ctx, user, 'totp', 'not_enrolled', meta);
  const now = ctx.clock.nowMs();
  const step = matchTotp(decryptSecret(ctx.kek, user.id, t.secret_enc), code.replace(/\s/g, ''), now);
  if (step === undefined) return recordFailure(ctx, user, 'totp', 'wrong_code', meta);
  // RFC 6238 §5.2: "the verifier MUST NOT accept the second attempt of the OTP after the successful validation".
  if (!(await ctx.storage.mfa.useTotpStep(user.id, step, now)))
    return recordFailure(ctx, user, 'totp', 'replayed', meta);
  await ctx.storage.mfa.resetFailures(user.id);
  return { ok: true, amr: ['pwd', 'otp', 'mfa'], level: 2 };
}

/** Starts (or restarts) TOTP enrolment: a new unconfirmed secret. Refused while a confirmed one exists. */
export async function startTotpEnrolment(
  ctx: OAuthContext,
  user: UserRecord,
): Promise<{ secret: string; uri: string } | undefined> {
  const existing = await ctx.storage.mfa.getTotp(user.id);
  if (existing?.confirmed) return undefined;
  const secret = newTotpSecret();
  const now = ctx.clock.nowMs();
  await ctx.storage.mfa.putTotp({
    user_id: user.id,
    secret_enc: ctx.kek.encrypt(secret, totpAad(user.id)),
    confirmed: false,
    // Codes from before enrolment never count, even if the secret were known then.
    last_step: totpStep(now) - 2,
    created_at: now,
    confirmed_at: null,
    last_used_at: null,
  });
  return { secret, uri: totpUri(ctx.config, user, secret) };
}

export function totpUri(config: Config, user: UserRecord, secret: string): string {
  return otpauthUri({ issuer: config.mfa.totp_issuer ?? config.branding.name, account: user.username, secret });
}

/** The pending (unconfirmed) secret, to show again when the first code was wrong. */
export async function pendingTotpSecret(ctx: OAuthContext, user: UserRecord): Promise<string | undefined> {
  const t = await ctx.storage.mfa.getTotp(user.id);
  if (!t || t.confirmed) return undefined;
  return decryptSecret(ctx.kek, user.id, t.secret_enc);
}

/** Confirms enrolment with the first code (proves the app has the secret); writes mfa.enrolled. */
export async function confirmTotpEnrolment(
  ctx: OAuthContext,
  user: UserRecord,
  code: string,
  meta: RequestMeta,
): Promise<FactorOutcome> {
  const locked = await refuseIfLocked(ctx, user, 'totp', meta);
  if (locked) return locked;
  const t = await ctx.storage.mfa.getTotp(user.id);
  if (!t || t.confirmed) return { ok: false, reason: 'not_enrolled' };
  const now = ctx.clock.nowMs();
  const step = matchTotp(decryptSecret(ctx.kek, user.id, t.secret_enc), code.replace(/\s/g, ''), now);
  if (step === undefined) return recordFailure(ctx, user, 'totp', 'wrong_code', meta);
  const ok = await ctx.storage.withTransaction(async (tx) => {
    if (!(await tx.mfa.useTotpStep(user.id, step, now))) return false;
    await tx.mfa.putTotp({ ...t, confirmed: true, last_step: step, confirmed_at: now, last_used_at: now });
    await tx.events.append(enrolledEvent(user, 'totp', now, meta));
    return true;
  });
  if (!ok) return recordFailure(ctx, user, 'totp', 'replayed', meta);
  await ctx.storage.mfa.resetFailures(user.id);
  return { ok: true, amr: ['pwd', 'otp', 'mfa'], level: 2 };
}

function enrolledEvent(
  user: UserRecord,
  factor: string,
  at: number,
  meta: RequestMeta | undefined,
  extra: Record<string, unknown> = {},
  actor: string | null = null,
): SecurityEvent {
  return {
    type: 'mfa.enrolled',
    at,
    subject: user.id,
    ...correlation(meta),
    actor,
    data: { factor, username: user.username, ...(meta ? { ip: meta.ip } : {}), ...extra },
  };
}

// --------------------------------------------------------------------------------------------------------------
// Recovery codes (NIST SP 800-63B-4 §3.1.2 look-up secrets): 10 codes of 12 base32 characters (60 bits each),
// shown once, stored as SHA-256, each usable once. A new set replaces the old one.

const RECOVERY_ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';

function normaliseRecoveryCode(code: string): string {
  return code.toLowerCase().replace(/[^a-z0-9]/g, '');
}

function hashRecoveryCode(userId: string, code: string): string {
  return sha256Hex(`portcullis-recovery\u0000${userId}\u0000${normaliseRecoveryCode(code)}`);
}

export async function generateRecoveryCodes(ctx: OAuthContext, user: UserRecord, meta: RequestMeta): Promise<string[]> {
  const codes: string[] = [];
  for (let i = 0; i < 10; i++) {
    const bytes = randomBytes(12);
    let c = '';
    // 31 letters: rejection-free but slightly biased modulo; 12 characters still give more than 59 bits.
    for (const b of bytes) c += RECOVERY_ALPHABET[b % RECOVERY_ALPHABET.length];
    codes.push(`${c.slice(0, 4)}-${c.slice(4, 8)}-${c.slice(8, 12)}`);
  }
  const now = ctx.clock.nowMs();
  await ctx.storage.withTransaction(async (tx) => {
    await tx.mfa.replaceRecoveryCodes(
      user.id,
      codes.map((c) => hashRecoveryCode(user.id, c)),
      now,
    );
    await tx.events.append(enrolledEvent(user, 'recovery_codes', now, meta, { count: codes.length }));
  });
  return codes;
}

export async function verifyRecoveryCode(
  ctx: OAuthContext,
  user: UserRecord,
  code: string,
  meta: RequestMeta,
): Promise<FactorOutcome> {
  const locked = await refuseIfLocked(ctx, user, 'recovery_code', meta);
  if (locked) return locked;
  const now = ctx.clock.nowMs();
  if (!(await ctx.storage.mfa.useRecoveryCode(user.id, hashRecoveryCode(user.id, code), now)))
    return recordFailure(ctx, user, 'recovery_code', 'wrong_code', meta);
  await ctx.storage.mfa.resetFailures(user.id);
  return { ok: true, amr: ['pwd', 'rcv', 'mfa'], level: 2 };
}

// --------------------------------------------------------------------------------------------------------------
// WebAuthn passkeys (W3C WebAuthn Level 3). The challenge is stored per session and purpose and taken (deleted)
// when the answer arrives, so each is used once; user verification is required (§6.2.3), the origin and RP ID are
// checked (§7.1 steps 9 and 13, §7.2 steps 11 and 15), and a signature counter that does not grow is refused
// (§6.1.1: a cloned authenticator).

const CHALLENGE_TTL_MS = 5 * 60 * 1000;

export function webauthnRp(config: Config): { id: string; name: string; origin: string } {
  const u = new URL(config.issuer);
  return {
    id: config.mfa.webauthn_rp_id ?? u.hostname,
    name: config.mfa.webauthn_rp_name ?? config.branding.name,
    origin: u.origin,
  };
}

export async function passkeyRegistrationOptions(
  ctx: OAuthContext,
  user: UserRecord,
  sid: string,
): Promise<PublicKeyCredentialCreationOptionsJSON> {
  const rp = webauthnRp(ctx.config);
  const existing = await ctx.storage.mfa.listCredentials(user.id);
  const options = await generateRegistrationOptions({
    rpName: rp.name,
    rpID: rp.id,
    userName: user.username,
    userID: new TextEncoder().encode(user.id),
    userDisplayName: user.name ?? user.username,
    attestationType: 'none',
    excludeCredentials: existing.map((c) => ({ id: c.id, transports: c.transports })),
    authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
  });
  await ctx.storage.mfa.putChallenge(`${sid}:register`, options.challenge, ctx.clock.nowMs() + CHALLENGE_TTL_MS);
  return options;
}

export async function registerPasskey(
  ctx: OAuthContext,
  user: UserRecord,
  sid: string,
  input: { response: string; name: string },
  meta: RequestMeta,
): Promise<FactorOutcome> {
  const rp = webauthnRp(ctx.config);
  const now = ctx.clock.nowMs();
  const challenge = await ctx.storage.mfa.takeChallenge(`${sid}:register`, now);
  if (!challenge) return { ok: false, reason: 'invalid_response' };
  try {
    const v = await verifyRegistrationResponse({
      response: JSON.parse(input.response) as RegistrationResponseJSON,
      expectedChallenge: challenge,
      expectedOrigin: rp.origin,
      expectedRPID: rp.id,
      requireUserVerification: true,
    });
    if (!v.verified) return { ok: false, reason: 'invalid_response' };
    const c = v.registrationInfo.credential;
    const name = input.name.trim().slice(0, 64) || 'Passkey';
    await ctx.storage.withTransaction(async (tx) => {
      await tx.mfa.addCredential({
        id: c.id,
        user_id: user.id,
        public_key: Buffer.from(c.publicKey).toString('base64url'),
        counter: c.counter,
        transports: c.transports ?? [],
        name,
        created_at: now,
        last_used_at: null,
      });
      await tx.events.append(enrolledEvent(user, 'passkey', now, meta, { credential: c.id.slice(0, 16), name }));
    });
    return { ok: true, amr: ['pwd', 'hwk', 'user', 'mfa'], level: 3 };
  } catch (e) {
    ctx.log.info({ err: (e as Error).message }, 'passkey registration refused');
    return { ok: false, reason: 'invalid_response' };
  }
}

export async function passkeyAuthenticationOptions(
  ctx: OAuthContext,
  user: UserRecord,
  sid: string,
): Promise<PublicKeyCredentialRequestOptionsJSON | undefined> {
  const creds = await ctx.storage.mfa.listCredentials(user.id);
  if (!creds.length) return undefined;
  const options = await generateAuthenticationOptions({
    rpID: webauthnRp(ctx.config).id,
    allowCredentials: creds.map((c) => ({ id: c.id, transports: c.transports })),
    userVerification: 'required',
  });
  await ctx.storage.mfa.putChallenge(`${sid}:authenticate`, options.challenge, ctx.clock.nowMs() + CHALLENGE_TTL_MS);
  return options;
}

export async function verifyPasskey(
  ctx: OAuthContext,
  user: UserRecord,
  sid: string,
  response: string,
  meta: RequestMeta,
): Promise<FactorOutcome> {
  const locked = await refuseIfLocked(ctx, user, 'passkey', meta);
  if (locked) return locked;
  const rp = webauthnRp(ctx.config);
  const now = ctx.clock.nowMs();
  const challenge = await ctx.storage.mfa.takeChallenge(`${sid}:authenticate`, now);
  let parsed: AuthenticationResponseJSON;
  try {
    parsed = JSON.parse(response) as AuthenticationResponseJSON;
  } catch {
    return recordFailure(ctx, user, 'passkey', 'invalid_response', meta);
  }
  // The credential must be this user's: a passkey of another account proves nothing here.
  const cred = typeof parsed?.id === 'string' ? await ctx.storage.mfa.getCredential(parsed.id) : undefined;
  if (!challenge || !cred || cred.user_id !== user.id)
    return recordFailure(ctx, user, 'passkey', 'invalid_response', meta);
  try {
    const v = await verifyAuthenticationResponse({
      response: parsed,
      expectedChallenge: challenge,
      expectedOrigin: rp.origin,
      expectedRPID: rp.id,
      credential: {
        id: cred.id,
        publicKey: new Uint8Array(Buffer.from(cred.public_key, 'base64url')),
        counter: cred.counter,
        transports: cred.transports,
      },
      requireUserVerification: true,
    });
    if (!v.verified) return recordFailure(ctx, user, 'passkey', 'invalid_response', meta);
    await ctx.storage.mfa.useCredential(cred.id, v.authenticationInfo.newCounter, now);
  } catch (e) {
    ctx.log.info({ err: (e as Error).message }, 'passkey assertion refused');
    return recordFailure(ctx, user, 'passkey', 'invalid_response', meta);
  }
  await ctx.storage.mfa.resetFailures(user.id);
  return { ok: true, amr: ['pwd', 'hwk', 'user', 'mfa'], level: 3 };
}

// --------------------------------------------------------------------------------------------------------------
// Removal.

function removedEvent(
  user: UserRecord,
  factor: string,
  at: number,
  meta: RequestMeta | undefined,
  actor: string | null,
  extra: Record<string, unknown> = {},
): SecurityEvent {
  return {
    type: 'mfa.removed',
    at,
    subject: user.id,
    ...correlation(meta),
    actor,
    data: { factor, username: user.username, ...extra },
  };
}

export type RemovableFactor = { kind: 'totp' } | { kind: 'passkey'; id: string } | { kind: 'recovery_codes' };

export async function removeFactor(
  ctx: OAuthContext,
  user: UserRecord,
  f: RemovableFactor,
  meta: RequestMeta,
): Promise<boolean> {
  const now = ctx.clock.nowMs();
  return ctx.storage.withTransaction(async (tx) => {
    let done = false;
    if (f.kind === 'totp') done = await tx.mfa.deleteTotp(user.id);
    else if (f.kind === 'passkey') done = await tx.mfa.deleteCredential(user.id, f.id);
    else done = (await tx.mfa.deleteRecoveryCodes(user.id)) > 0;
    if (done)
      await tx.events.append(
        removedEvent(user, f.kind, now, meta, null, f.kind === 'passkey' ? { credential: f.id.slice(0, 16) } : {}),
      );
    return done;
  });
}

/**
 * `portcullis users reset-mfa`: an administrator removes every factor (lost phone, lost keys) and clears the
 * lock. The user's sessions end so nothing signed in with the old factors lives on. One mfa.removed event.
 */
export async function resetMfa(
  a: { storage: Storage; clock: Clock },
  username: string,
  actor = 'cli',
): Promise<{ totp: boolean; passkeys: number; recoveryCodes: number; sessionsEnded: number }> {
  const user = await a.storage.users.getByUsername(username);
  if (!user) throw new Error(`no user ${username}`);
  const now = a.clock.nowMs();
  return a.storage.withTransaction(async (tx) => {
    const totp = await tx.mfa.deleteTotp(user.id);
    const creds = await tx.mfa.listCredentials(user.id);
    for (const c of creds) await tx.mfa.deleteCredential(user.id, c.id);
    const recoveryCodes = await tx.mfa.deleteRecoveryCodes(user.id);
    await tx.mfa.resetFailures(user.id);
    const ended = await tx.sessions.endByUser(user.id, now, 'mfa_reset');
    for (const sid of ended)
      await tx.events.append({
        type: 'session.ended',
        at: now,
        subject: user.id,
        session_id: sid,
        actor,
        data: { sid, reason: 'mfa_reset' },
      });
    await tx.events.append(
      removedEvent(user, 'all', now, undefined, actor, { totp, passkeys: creds.length, recovery_codes: recoveryCodes }),
    );
    return { totp, passkeys: creds.length, recoveryCodes, sessionsEnded: ended.length };
  });
}

/**
 * Seeds users[].totp_secret from the configuration: a user without a TOTP factor gets the configured secret,
 * confirmed, encrypted under the KEK, with mfa.enrolled (actor config). A secret already stored is left alone.
 */
export async function seedTotpSecrets(storage: Storage, config: Config, kek: Kek, clock: Clock): Promise<number> {
  let seeded = 0;
  for (const u of config.users) {
    if (!u.totp_secret) continue;
    const user = await storage.users.getByUsername(u.username);
    if (!user || (await storage.mfa.getTotp(user.id))?.confirmed) continue;
    base32Decode(u.totp_secret);
    const now = clock.nowMs();
    await storage.withTransaction(async (tx) => {
      await tx.mfa.putTotp({
        user_id: user.id,
        secret_enc: kek.encrypt(u.totp_secret!.toUpperCase().replace(/=+$/, ''), totpAad(user.id)),
        confirmed: true,
        last_step: 0,
        created_at: now,
        confirmed_at: now,
        last_used_at: null,
      });
      await tx.events.append(enrolledEvent(user, 'totp', now, undefined, {}, 'config'));
    });
    seeded++;
  }
  return seeded;
}
