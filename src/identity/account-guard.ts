import type { Config } from '../config/schema.ts';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { OAuthContext } from '../oauth/context.ts';
import type { AccountGuardRecord, UserRecord } from '../storage/ports.ts';
import type { UserAdmin } from './users.ts';

/**
 * Consecutive wrong passwords per account (NIST SP 800-63B-4 §3.2.2: limit consecutive failed attempts on one
 * account to at most 100; growing waits between attempts are one of its suggested measures). Counted in the
 * database, so every node and the CLI (`portcullis users unlock`) see the same state:
 * - after throttle.delay_after failures, each further wrong password makes the account wait before the next
 *   attempt: 1 s, 2 s, 4 s... up to throttle.delay_max;
 * - at throttle.lock_after failures the account is locked for throttle.lock_duration (account.locked);
 * - while it waits or is locked, no password is checked, not even the right one, and attempts do not count (a
 *   lock that grew with every attempt would let anyone keep any account locked forever);
 * - a successful sign-in resets the count (users.ts), and so does `portcullis users unlock` (account.unlocked).
 * A lock that runs out needs no write: the next attempt is simply checked again, and one more wrong password
 * locks again at once (the count is still over lock_after).
 */

export function isLocked(guard: AccountGuardRecord | undefined, now: number): boolean {
  return guard?.locked_until != null && guard.locked_until > now;
}

/** How long (ms) the account must wait after its `failures`-th consecutive failure; 0 for none. */
export function waitAfter(failures: number, t: Config['throttle']): { ms: number; locked: boolean } {
  if (failures >= t.lock_after) return { ms: t.lock_duration * 1000, locked: true };
  if (failures < t.delay_after) return { ms: 0, locked: false };
  const seconds = Math.min(2 ** (failures - t.delay_after), t.delay_max);
  return { ms: seconds * 1000, locked: false };
}

/**
 * Counts one wrong password and applies the wait or lock it leads to, with the login.failed event (and
 * account.locked when the lock starts), in one transaction.
 */
export async function recordPasswordFailure(
  ctx: OAuthContext,
  user: UserRecord,
  failed: SecurityEvent,
  now: number,
): Promise<void> {
  await ctx.storage.withTransaction(async (tx) => {
    const failures = await tx.accountGuard.recordFailure(user.id, now);
    const wait = waitAfter(failures, ctx.config.throttle);
    if (wait.ms > 0) await tx.accountGuard.lock(user.id, now + wait.ms);
    await tx.events.append({ ...failed, data: { ...failed.data, failures } });
    if (wait.locked)
      await tx.events.append({
        type: 'account.locked',
        at: now,
        subject: user.id,
        request_id: failed.request_id ?? null,
        ip: failed.ip ?? null,
        session_id: failed.session_id ?? null,
        data: {
          username: user.username,
          failures,
          locked_until: now + wait.ms,
          ip: failed.data.ip ?? null,
        },
      });
  });
}

/** `portcullis users unlock NAME`: forgets the failures and ends any lock or wait, with account.unlocked. */
export async function unlockUser(a: UserAdmin, username: string): Promise<{ wasLocked: boolean; failures: number }> {
  const u = await a.storage.users.getByUsername(username);
  if (!u) throw new Error(`no user ${username}`);
  const now = a.clock.nowMs();
  return a.storage.withTransaction(async (tx) => {
    const guard = await tx.accountGuard.get(u.id);
    if (!guard) return { wasLocked: false, failures: 0 };
    await tx.accountGuard.reset(u.id);
    const wasLocked = guard.failures >= a.config.throttle.lock_after;
    await tx.events.append({
      type: 'account.unlocked',
      at: now,
      subject: u.id,
      actor: 'cli',
      data: { username: u.username, failures: guard.failures, locked_until: guard.locked_until, was_locked: wasLocked },
    });
    return { wasLocked, failures: guard.failures };
  });
}
