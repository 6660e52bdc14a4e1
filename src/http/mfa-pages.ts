import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import QRCode from 'qrcode';
import {
  acrLevel,
  confirmTotpEnrolment,
  type FactorOutcome,
  generateRecoveryCodes,
  levelAcr,
  lockedFor,
  mfaStatus,
  passkeyAuthenticationOptions,
  passkeyRegistrationOptions,
  pendingTotpSecret,
  registerPasskey,
  removeFactor,
  startTotpEnrolment,
  totpUri,
  verifyPasskey,
  verifyRecoveryCode,
  verifyTotp,
} from '../identity/mfa.ts';
import { limitRequest } from '../identity/rate-limits.ts';
import { checkCsrf, csrfToken, type LoadedSession, signIn } from '../identity/sessions.ts';
import type { OAuthContext } from '../oauth/context.ts';
import { cookieHeader, formTarget, meta, pendingRequest, safeReturnTo, sendPage } from './pages.ts';
import { mfaPage, recoveryCodesPage, securityPage, totpEnrolPage } from './views/pages.ts';

type SignedIn = LoadedSession & { user: NonNullable<LoadedSession['user']> };

/**
 * The second step of sign-in (/mfa) and the account page for factors (/account/security). Every POST needs the
 * session's CSRF token. Passing a factor replaces the session (new id, auth_time now, stronger acr/amr) like a
 * sign-in does, then continues to return_to, where policy is checked again.
 *
 * The account page needs the second factor once the user has one (a stolen password alone must not remove or add
 * factors); a user with no factor may enrol the first one from a password session (bootstrap; seed totp_secret or
 * enrol people in person when that is not acceptable).
 */
export function registerMfaPages(
  app: FastifyInstance,
  ctx: OAuthContext,
  h: {
    session: (req: FastifyRequest) => Promise<LoadedSession | undefined>;
    params: (req: FastifyRequest) => { params: Record<string, string>; repeated: string[] };
    showError: (reply: FastifyReply, status: number, error: string, description: string) => FastifyReply;
  },
): void {
  const cfg = ctx.config;
  const see = (reply: FastifyReply, location: string) =>
    reply.code(303).header('cache-control', 'no-store').header('location', location).send();
  const signedIn = (s: LoadedSession | undefined): s is SignedIn =>
    s?.user !== undefined && s.record.auth_time !== null;
  const toLogin = (reply: FastifyReply, returnTo: string) =>
    see(reply, `/login?${new URLSearchParams({ return_to: returnTo })}`);
  const csrfRefused = (reply: FastifyReply) =>
    h.showError(
      reply,
      403,
      'invalid_csrf_token',
      'The form expired or did not come from this site. Go back and try again.',
    );
  /** A POST from a signed-in session with its CSRF token, or an answer already sent. */
  const postGuard = async (req: FastifyRequest, reply: FastifyReply) => {
    const { params: f } = h.params(req);
    const s = await h.session(req);
    if (!s || !checkCsrf(s.cookieValue, f.csrf_token)) return { reply: csrfRefused(reply) };
    if (!signedIn(s)) return { reply: toLogin(reply, '/account/security') };
    return { s, f };
  };
  /** Passing a factor: a new session with the stronger acr and amr (never weaker than the one it replaces). */
  const upgrade = async (req: FastifyRequest, reply: FastifyReply, s: SignedIn, out: FactorOutcome, next: string) => {
    if (!out.ok) throw new Error('upgrade after a failure');
    const level = Math.max(out.level, acrLevel(s.record.acr)) as 1 | 2 | 3;
    const fresh = await signIn(ctx, { user: s.user, previous: s, amr: out.amr, acr: levelAcr(level) }, meta(req));
    reply.header('set-cookie', cookieHeader(cfg.issuer, fresh.cookieValue));
    return see(reply, next);
  };
  const returnOf = (v: string | undefined) => (v ? safeReturnTo(v) : undefined);
  /**
   * Where a form's redirect chain may end: passing the factor continues to /authorize, which may answer straight
   * to the client's redirect_uri (Chromium checks form-action on every redirect of a form submission).
   */
  const targets = async (returnTo: string | undefined) =>
    returnTo ? [formTarget((await pendingRequest(ctx, returnTo))?.redirectUri)] : [];

  // ------------------------------------------------------------------------------------------------------------
  // The factor step.

  const renderMfa = async (
    reply: FastifyReply,
    s: SignedIn,
    returnTo: string,
    level: number,
    status: number,
    error?: string,
  ) => {
    const st = await mfaStatus(ctx.storage, s.user.id);
    const options = await passkeyAuthenticationOptions(ctx, s.user, s.sid);
    return sendPage(
      reply,
      status,
      mfaPage({
        config: cfg,
        csrf: csrfToken(s.cookieValue),
        username: s.user.username,
        returnTo,
        level,
        totp: st.totp,
        passkeyOptions: options ? JSON.stringify(options) : undefined,
        recoveryCodes: st.recoveryCodes,
        error,
      }),
      await targets(returnTo),
      { script: !!options },
    );
  };

  app.get('/mfa', async (req, reply) => {
    const { params: q } = h.params(req);
    const returnTo = safeReturnTo(q.return_to);
    if (!returnTo) return h.showError(reply, 400, 'invalid_request', 'return_to must be a path on this server');
    const s = await h.session(req);
    if (!signedIn(s)) return toLogin(reply, returnTo);
    const st = await mfaStatus(ctx.storage, s.user.id);
    if (!st.enrolled && st.recoveryCodes === 0)
      return see(reply, `/account/security?${new URLSearchParams({ return_to: returnTo, required: '2' })}`);
    const level = q.level === '3' ? 3 : 2;
    const wait = await lockedFor(ctx, s.user.id);
    if (wait) reply.header('retry-after', String(wait));
    return renderMfa(reply, s, returnTo, level, wait ? 429 : 200, wait ? lockedText(wait) : undefined);
  });

  const factorPost = (
    path: string,
    check: (s: SignedIn, f: Record<string, string>, req: FastifyRequest) => Promise<FactorOutcome>,
  ) =>
    app.post(path, async (req, reply) => {
      const g = await postGuard(req, reply);
      if ('reply' in g) return g.reply;
      const { s, f } = g;
      const returnTo = safeReturnTo(f.return_to);
      if (!returnTo) return h.showError(reply, 400, 'invalid_request', 'return_to must be a path on this server');
      // Per-IP and global limits (throttle.mfa_*) on top of the per-account failure lock: guessing across many
      // accounts from one address is stopped too. A refused attempt is not checked and does not count.
      const limited = await limitRequest(ctx, 'mfa', meta(req, s));
      if (limited) {
        reply.header('retry-after', String(limited.retryAfter));
        return renderMfa(reply, s, returnTo, 2, 429, lockedText(limited.retryAfter));
      }
      const out = await check(s, f, req);
      if (out.ok) return upgrade(req, reply, s, out, returnTo);
      if (out.reason === 'locked') {
        reply.header('retry-after', String(out.retryAfter ?? cfg.mfa.lock_period));
        return renderMfa(reply, s, returnTo, 2, 429, lockedText(out.retryAfter ?? cfg.mfa.lock_period));
      }
      const text =
        out.reason === 'replayed'
          ? 'That code was already used. Wait for the next code in your app.'
          : path === '/mfa/passkey'
            ? 'The passkey could not be verified. Try again.'
            : 'That code is not right. Check it and try again.';
      return renderMfa(reply, s, returnTo, 2, 401, text);
    });
  factorPost('/mfa/totp', (s, f, req) => verifyTotp(ctx, s.user, (f.code ?? '').slice(0, 20), meta(req, s)));
  factorPost('/mfa/recovery', (s, f, req) =>
    verifyRecoveryCode(ctx, s.user, (f.code ?? '').slice(0, 40), meta(req, s)),
  );
  factorPost('/mfa/passkey', (s, f, req) => verifyPasskey(ctx, s.user, s.sid, f.response ?? '', meta(req, s)));

  // ------------------------------------------------------------------------------------------------------------
  // The account page.

  /** The account page's guard: signed in, and past the second factor once the user has one. */
  const accountSession = async (req: FastifyRequest, reply: FastifyReply, here: string) => {
    const s = await h.session(req);
    if (!signedIn(s)) return { reply: toLogin(reply, here) };
    const st = await mfaStatus(ctx.storage, s.user.id);
    if (st.enrolled && acrLevel(s.record.acr) < 2)
      return { reply: see(reply, `/mfa?${new URLSearchParams({ return_to: here, level: '2' })}`) };
    return { s, st };
  };

  app.get('/account/security', async (req, reply) => {
    const { params: q } = h.params(req);
    const returnTo = returnOf(q.return_to);
    const here = `/account/security${returnTo ? `?${new URLSearchParams({ return_to: returnTo })}` : ''}`;
    const g = await accountSession(req, reply, here);
    if ('reply' in g) return g.reply;
    const { s, st } = g;
    const messages: Record<string, string> = {
      totp: 'Your authenticator app is set up.',
      passkey: 'Your passkey is added.',
      passkey_failed: 'The passkey could not be added. Try again.',
      removed: 'Removed.',
    };
    const options = await passkeyRegistrationOptions(ctx, s.user, s.sid);
    const passkeys = await ctx.storage.mfa.listCredentials(s.user.id);
    return sendPage(
      reply,
      200,
      securityPage({
        config: cfg,
        csrf: csrfToken(s.cookieValue),
        username: s.user.username,
        returnTo,
        totp: st.totp,
        passkeys,
        recoveryCodes: st.recoveryCodes,
        passkeyOptions: JSON.stringify(options),
        message: q.done ? messages[q.done] : undefined,
        required: !!q.required && acrLevel(s.record.acr) < Number(q.required),
      }),
      await targets(returnTo),
      { script: true },
    );
  });

  const totpPage = async (
    reply: FastifyReply,
    s: SignedIn,
    returnTo: string | undefined,
    status = 200,
    error?: string,
  ) => {
    const secret = (await pendingTotpSecret(ctx, s.user)) ?? (await startTotpEnrolment(ctx, s.user))?.secret;
    if (!secret) return see(reply, '/account/security');
    const svg = await QRCode.toString(totpUri(cfg, s.user, secret), {
      type: 'svg',
      margin: 2,
      errorCorrectionLevel: 'M',
    });
    return sendPage(
      reply,
      status,
      totpEnrolPage({
        config: cfg,
        csrf: csrfToken(s.cookieValue),
        username: s.user.username,
        returnTo,
        qrDataUri: `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}`,
        secret,
        error,
      }),
      await targets(returnTo),
      { dataImages: true },
    );
  };

  app.get('/account/security/totp', async (req, reply) => {
    const { params: q } = h.params(req);
    const returnTo = returnOf(q.return_to);
    const g = await accountSession(req, reply, '/account/security');
    if ('reply' in g) return g.reply;
    return totpPage(reply, g.s, returnTo);
  });

  /** After enrolment: on to where the sign-in was going (policy is checked there again), or the account page. */
  const afterEnrol = (returnTo: string | undefined, done: string) => returnTo ?? `/account/security?done=${done}`;

  app.post('/account/security/totp', async (req, reply) => {
    const g0 = await postGuard(req, reply);
    if ('reply' in g0) return g0.reply;
    const g = await accountSession(req, reply, '/account/security');
    if ('reply' in g) return g.reply;
    const returnTo = returnOf(g0.f.return_to);
    const out = await confirmTotpEnrolment(ctx, g.s.user, (g0.f.code ?? '').slice(0, 20), meta(req, g.s));
    if (out.ok) return upgrade(req, reply, g.s, out, afterEnrol(returnTo, 'totp'));
    if (out.reason === 'not_enrolled') return see(reply, '/account/security');
    if (out.reason === 'locked') reply.header('retry-after', String(out.retryAfter ?? cfg.mfa.lock_period));
    return totpPage(
      reply,
      g.s,
      returnTo,
      out.reason === 'locked' ? 429 : 400,
      out.reason === 'locked'
        ? lockedText(out.retryAfter ?? cfg.mfa.lock_period)
        : 'That code is not right. Check the time on your phone and try the next code.',
    );
  });

  app.post('/account/security/passkeys', async (req, reply) => {
    const g0 = await postGuard(req, reply);
    if ('reply' in g0) return g0.reply;
    const g = await accountSession(req, reply, '/account/security');
    if ('reply' in g) return g.reply;
    const returnTo = returnOf(g0.f.return_to);
    const out = await registerPasskey(
      ctx,
      g.s.user,
      g.s.sid,
      { response: g0.f.response ?? '', name: g0.f.name ?? '' },
      meta(req, g.s),
    );
    if (out.ok) return upgrade(req, reply, g.s, out, afterEnrol(returnTo, 'passkey'));
    return see(
      reply,
      `/account/security?${new URLSearchParams({ done: 'passkey_failed', ...(returnTo ? { return_to: returnTo } : {}) })}`,
    );
  });

  app.post('/account/security/recovery-codes', async (req, reply) => {
    const g0 = await postGuard(req, reply);
    if ('reply' in g0) return g0.reply;
    const g = await accountSession(req, reply, '/account/security');
    if ('reply' in g) return g.reply;
    const codes = await generateRecoveryCodes(ctx, g.s.user, meta(req, g.s));
    return sendPage(reply, 200, recoveryCodesPage({ config: cfg, codes, returnTo: returnOf(g0.f.return_to) }));
  });

  const removal = (path: string, factor: (f: Record<string, string>) => Parameters<typeof removeFactor>[2]) =>
    app.post(path, async (req, reply) => {
      const g0 = await postGuard(req, reply);
      if ('reply' in g0) return g0.reply;
      const g = await accountSession(req, reply, '/account/security');
      if ('reply' in g) return g.reply;
      await removeFactor(ctx, g.s.user, factor(g0.f), meta(req, g.s));
      return see(reply, '/account/security?done=removed');
    });
  removal('/account/security/totp/remove', () => ({ kind: 'totp' }));
  removal('/account/security/passkeys/remove', (f) => ({ kind: 'passkey', id: (f.id ?? '').slice(0, 1024) }));
}

function lockedText(seconds: number): string {
  return `Too many wrong codes. For your safety, the second step is locked for ${Math.ceil(seconds / 60)} minute(s).`;
}
