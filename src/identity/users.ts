import type { Config } from '../config/schema.ts';
import type { Clock } from '../lib/clock.ts';
import { randomId } from '../lib/crypto.ts';
import { addressKey } from '../lib/ip.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../oauth/context.ts';
import { revokeUserGrants } from '../oauth/grant-revocation.ts';
import type { Storage, UserRecord } from '../storage/ports.ts';
import { isLocked, recordPasswordFailure } from './account-guard.ts';
import { burnVerification, checkNewPassword, hashPassword, verifyPassword } from './passwords.ts';
import { noteRefusal, rule } from './rate-limits.ts';

export type LoginFailure = 'unknown_user' | 'bad_password' | 'disabled' | 'locked' | 'throttled';

export type LoginResult =
  | { ok: true; user: UserRecord }
  | { ok: false; reason: LoginFailure; retryAfter?: number | undefined };

/**
 * Checks a username and password (NIST SP 800-63B-4 §3.1.1.2 verification, §3.2.2 rate limiting):
 * 1. the address's failed sign-ins (throttle.login_failures_per_ip, across all accounts: password spraying) are
 *    checked first: over the limit, nothing else is looked at (`throttled`, a 429 for the page);
 * 2. an account that is locked or must still wait (account-guard.ts) is refused before its password is looked at;
 * 3. every refusal costs one argon2 verification — unknown users and locked accounts included — and the caller
 *    shows one message for unknown user, wrong password, disabled and locked, so the page does not tell which
 *    usernames exist or which are locked; the event (login.failed) tells the operator;
 * 4. a wrong password counts against the account (and may lock it, account.locked) in the same transaction as
 *    its login.failed; success resets the account's count, with login.succeeded, in one transaction.
 */
export async function authenticatePassword(
  ctx: OAuthContext,
  username: string,
  password: string,
  meta: RequestMeta,
): Promise<LoginResult> {
  const ipRule = rule(ctx.config, 'login_failures_per_ip');
  const address = addressKey(meta.ip);
  const ipState = await ctx.limiter.check(address, ipRule);
  if (!ipState.allowed) {
    const r = await noteRefusal(ctx, ipRule, 'ip', meta, ipState);
    return { ok: false, reason: 'throttled', retryAfter: r.retryAfter };
  }
  const now = ctx.clock.nowMs();
  const user = username ? await ctx.storage.users.getByUsername(username) : undefined;
  const guard = user?.password_hash ? await ctx.storage.accountGuard.get(user.id) : undefined;
  let reason: LoginFailure | undefined;
  if (!user?.password_hash) {
    await burnVerification(password);
    reason = 'unknown_user';
  } else if (isLocked(guard, now)) {
    await burnVerification(password);
    reason = 'locked';
  } else if (!(await verifyPassword(user.password_hash, password))) reason = 'bad_password';
  else if (user.disabled) reason = 'disabled';

  const base = { at: now, subject: user?.id ?? null, ...correlation(meta) };
  const who = { ip: meta.ip, user_agent: meta.userAgent?.slice(0, 200) ?? null };
  if (reason === undefined && user) {
    await ctx.storage.withTransaction(async (tx) => {
      const hadFailures = guard ? await tx.accountGuard.reset(user.id) : false;
      await tx.events.append({
        ...base,
        type: 'login.succeeded',
        data: { method: 'pwd', username: user.username, previous_failures: hadFailures ? guard!.failures : 0, ...who },
      });
    });
    return { ok: true, user };
  }
  const failed = {
    ...base,
    type: 'login.failed' as const,
    data: { reason: reason ?? 'unknown_user', username: username.slice(0, 100), ...who } as Record<string, unknown>,
  };
  if (reason === 'bad_password' && user) await recordPasswordFailure(ctx, user, failed, now);
  else {
    if (reason === 'locked') failed.data.locked_until = guard?.locked_until ?? null;
    await ctx.storage.events.append(failed);
  }
  await ctx.limiter.hit(address, ipRule);
  return { ok: false, reason: reason ?? 'unknown_user' };
}

/** Administration (the CLI). A user changed here is owned by the CLI from then on: configuration no longer overwrites it. */
export interface UserAdmin {
  storage: Storage;
  clock: Clock;
  config: Config;
  /** Longest access token lifetime plus skew, seconds: how long a grant revocation must be kept. */
  maxTokenLifetime: number;
}

export async function addUser(
  a: UserAdmin,
  input: { username: string; password?: string | undefined; email?: string | undefined; name?: string | undefined },
): Promise<UserRecord> {
  const username = input.username.normalize('NFKC');
  if (!username || username.length > 256 || /\s/.test(username))
    throw new Error('the username must be 1-256 characters without spaces');
  if (await a.storage.users.getByUsername(username)) throw new Error(`user ${username} already exists`);
  let hash: string | null = null;
  if (input.password !== undefined) {
    const problem = checkNewPassword(a.config, username, input.password);
    if (problem) throw new Error(problem);
    hash = await hashPassword(input.password);
  }
  const now = a.clock.nowMs();
  const user: UserRecord = {
    id: randomId(),
    username,
    password_hash: hash,
    email: input.email ?? null,
    name: input.name ?? null,
    disabled: false,
    source: 'cli',
    created_at: now,
    updated_at: now,
  };
  await a.storage.withTransaction(async (tx) => {
    await tx.users.upsert(user);
    await tx.events.append({ type: 'user.created', at: now, subject: user.id, actor: 'cli', data: { username } });
  });
  return user;
}

async function mustGet(a: UserAdmin, username: string): Promise<UserRecord> {
  const u = await a.storage.users.getByUsername(username);
  if (!u) throw new Error(`no user ${username}`);
  return u;
}

/**
 * Disables a user: ends every session and revokes every grant (so refresh tokens stop working and access tokens
 * fail introspection at once), with all events, in one transaction.
 */
export async function disableUser(
  a: UserAdmin,
  username: string,
  actor = 'cli',
): Promise<{ user: UserRecord; sessionsEnded: number; grantsRevoked: number }> {
  const u = await mustGet(a, username);
  const now = a.clock.nowMs();
  return a.storage.withTransaction(async (tx) => {
    const updated = { ...u, disabled: true, source: 'cli', updated_at: now };
    await tx.users.upsert(updated);
    let sessionsEnded = 0;
    // Each session individually so each gets its session.ended event.
    const ids = await tx.sessions.endByUser(u.id, now, 'user_disabled');
    for (const id of ids) {
      sessionsEnded++;
      await tx.events.append({
        type: 'session.ended',
        at: now,
        subject: u.id,
        session_id: id,
        actor,
        data: { sid: id, reason: 'user_disabled' },
      });
    }
    const grants = await revokeUserGrants(tx, u.id, {
      at: now,
      reason: 'user_disabled',
      actor,
      expiresAt: now + a.maxTokenLifetime * 1000,
    });
    await tx.events.append({
      type: 'user.disabled',
      at: now,
      subject: u.id,
      actor,
      data: { username: u.username, sessions_ended: sessionsEnded, grants_revoked: grants.length },
    });
    return { user: updated, sessionsEnded, grantsRevoked: grants.length };
  });
}

export async function enableUser(a: UserAdmin, username: string): Promise<UserRecord> {
  const u = await mustGet(a, username);
  const now = a.clock.nowMs();
  const updated = { ...u, disabled: false, source: 'cli', updated_at: now };
  await a.storage.withTransaction(async (tx) => {
    await tx.users.upsert(updated);
    await tx.events.append({
      type: 'user.enabled',
      at: now,
      subject: u.id,
      actor: 'cli',
      data: { username: u.username },
    });
  });
  return updated;
}

/** Sets a new password. Existing sessions stay (the account-protection issue decides otherwise for resets). */
export async function setPassword(a: UserAdmin, username: string, password: string): Promise<void> {
  const u = await mustGet(a, username);
  const problem = checkNewPassword(a.config, u.username, password);
  if (problem) throw new Error(problem);
  const hash = await hashPassword(password);
  const now = a.clock.nowMs();
  await a.storage.withTransaction(async (tx) => {
    await tx.users.upsert({ ...u, password_hash: hash, source: 'cli', updated_at: now });
    await tx.events.append({
      type: 'password.changed',
      at: now,
      subject: u.id,
      actor: 'cli',
      data: { username: u.username, by: 'cli' },
    });
  });
}
