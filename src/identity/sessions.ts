import type { SecurityEvent } from '../events/catalogue.ts';
import { constantTimeEqual, randomToken, sha256, sha256Hex } from '../lib/crypto.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../oauth/context.ts';
import type { SessionRecord, Stores, UserRecord } from '../storage/ports.ts';

/**
 * Server-side sessions. The cookie carries 256 random bits; the database holds only their SHA-256 (hex), which is
 * also the session's `sid` (OIDC Front-/Back-Channel Logout §2): knowing a sid does not give the cookie.
 *
 * A visitor who has not signed in gets an anonymous session (user_id null) the moment a form needs a CSRF token;
 * signing in always creates a new session with a new id (session fixation, OWASP ASVS V3.2.1) and ends the
 * anonymous one. MFA (a later issue) will add a step between password and a fully authenticated session.
 */

/** The authentication context class this server asserts for a password sign-in; MFA will add stronger ones. */
export const ACR_PASSWORD = '1';

export interface LoadedSession {
  record: SessionRecord;
  /** The raw cookie value (only in memory, for the CSRF token). */
  cookieValue: string;
  /** The session id hash: the sid claim. */
  sid: string;
  /** Present when the session is signed in and the user exists and is enabled. */
  user: UserRecord | undefined;
}

export function sessionIdHash(cookieValue: string): string {
  return sha256Hex(cookieValue);
}

/**
 * The CSRF token for a session: derived from the secret cookie value, so it is bound to the session, changes with
 * it at sign-in, and needs no storage. A cross-site attacker can read neither.
 */
export function csrfToken(cookieValue: string): string {
  return sha256(`portcullis-csrf\u0000${cookieValue}`).toString('base64url');
}

export function checkCsrf(cookieValue: string | undefined, token: string | undefined): boolean {
  if (!cookieValue || !token) return false;
  return constantTimeEqual(csrfToken(cookieValue), token);
}

function sessionEvent(
  type: 'session.created' | 'session.ended',
  rec: SessionRecord,
  at: number,
  meta: RequestMeta | undefined,
  data: Record<string, unknown>,
  actor: string | null = null,
): SecurityEvent {
  // session_id is the session the event is about (the request may carry the one it supersedes).
  return {
    type,
    at,
    subject: rec.user_id,
    ...correlation(meta),
    session_id: rec.id,
    actor,
    data: { sid: rec.id, ...data },
  };
}

/** Ends a live session and writes session.ended in the caller's transaction. */
export async function endSessionTx(
  tx: Stores,
  rec: SessionRecord,
  at: number,
  reason: string,
  meta?: RequestMeta,
  actor: string | null = null,
): Promise<boolean> {
  if (!(await tx.sessions.end(rec.id, at, reason))) return false;
  // Anonymous sessions are bookkeeping for CSRF, not sign-ins: they end without an event.
  if (rec.user_id !== null)
    await tx.events.append(sessionEvent('session.ended', rec, at, meta, { reason, ip: meta?.ip ?? null }, actor));
  return true;
}

export async function endSession(
  ctx: OAuthContext,
  rec: SessionRecord,
  reason: string,
  meta?: RequestMeta,
): Promise<boolean> {
  const at = ctx.clock.nowMs();
  return ctx.storage.withTransaction((tx) => endSessionTx(tx, rec, at, reason, meta));
}

/**
 * The live session behind a cookie, or undefined. Ends (with an event) a session past its idle or absolute timeout,
 * and one whose user was disabled or deleted; otherwise moves last_seen_at forward.
 */
export async function loadSession(
  ctx: OAuthContext,
  cookieValue: string | undefined,
  meta?: RequestMeta,
): Promise<LoadedSession | undefined> {
  if (!cookieValue || cookieValue.length > 128) return undefined;
  const id = sessionIdHash(cookieValue);
  const rec = await ctx.storage.sessions.get(id);
  if (!rec || rec.ended_at !== null) return undefined;
  const now = ctx.clock.nowMs();
  const idleMs = ctx.config.sessions.idle_timeout * 1000;
  let expired: string | undefined;
  if (now >= rec.expires_at) expired = 'absolute_timeout';
  else if (now - rec.last_seen_at > idleMs) expired = 'idle_timeout';
  let user: UserRecord | undefined;
  if (!expired && rec.user_id !== null) {
    user = await ctx.storage.users.getById(rec.user_id);
    if (!user || user.disabled) expired = 'user_disabled';
  }
  if (expired) {
    await endSession(ctx, rec, expired, meta);
    return undefined;
  }
  // Sliding idle timeout; skip the write when the last one is very recent.
  if (now - rec.last_seen_at > 5000) {
    await ctx.storage.sessions.touch(id, now);
    rec.last_seen_at = now;
  }
  return { record: rec, cookieValue, sid: id, user };
}

/** An anonymous session so the sign-in form has a CSRF token bound to something. */
export async function startAnonymousSession(ctx: OAuthContext): Promise<LoadedSession> {
  const now = ctx.clock.nowMs();
  const cookieValue = randomToken(32);
  const rec: SessionRecord = {
    id: sessionIdHash(cookieValue),
    user_id: null,
    auth_time: null,
    amr: [],
    acr: null,
    created_at: now,
    last_seen_at: now,
    expires_at: now + ctx.config.authorization.interaction_ttl * 1000,
    ended_at: null,
    ended_reason: null,
  };
  await ctx.storage.sessions.insert(rec);
  return { record: rec, cookieValue, sid: rec.id, user: undefined };
}

/**
 * Signs a user in: a new session (new cookie value, new id) with auth_time now, ending the session the browser had
 * (anonymous or another user's), all with their events in one transaction.
 */
export async function signIn(
  ctx: OAuthContext,
  input: { user: UserRecord; previous: LoadedSession | undefined; amr: string[]; acr: string | null },
  meta: RequestMeta,
): Promise<LoadedSession> {
  const now = ctx.clock.nowMs();
  const cookieValue = randomToken(32);
  const rec: SessionRecord = {
    id: sessionIdHash(cookieValue),
    user_id: input.user.id,
    auth_time: now,
    amr: input.amr,
    acr: input.acr,
    created_at: now,
    last_seen_at: now,
    expires_at: now + ctx.config.sessions.absolute_timeout * 1000,
    ended_at: null,
    ended_reason: null,
  };
  await ctx.storage.withTransaction(async (tx) => {
    if (input.previous) await endSessionTx(tx, input.previous.record, now, 'superseded', meta);
    await tx.sessions.insert(rec);
    await tx.events.append(
      sessionEvent('session.created', rec, now, meta, {
        amr: rec.amr,
        acr: rec.acr,
        ip: meta.ip,
        user_agent: meta.userAgent?.slice(0, 200) ?? null,
        replaced: input.previous?.record.user_id ? input.previous.sid : null,
      }),
    );
  });
  return { record: rec, cookieValue, sid: rec.id, user: input.user };
}
