import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { InvalidRequest } from '../errors/oauth-error.ts';
import { withdrawConsent } from '../identity/consent.ts';
import { mfaStatus, requiredLevel } from '../identity/mfa.ts';
import { limitRequest } from '../identity/rate-limits.ts';
import {
  ACR_PASSWORD,
  checkCsrf,
  csrfToken,
  type LoadedSession,
  loadSession,
  signIn,
  startAnonymousSession,
} from '../identity/sessions.ts';
import { authenticatePassword } from '../identity/users.ts';
import { sha256Hex } from '../lib/crypto.ts';
import { REQUEST_URI_PREFIX } from '../oauth/authorization/request.ts';
import type { OAuthContext, RequestMeta } from '../oauth/context.ts';
import { formatUserCode, normaliseUserCode } from '../oauth/device/user-code.ts';
import { type AuthorizeOutcome, authorizeEndpoint, decideConsent } from '../oauth/endpoints/authorize.ts';
import {
  decideDeviceRequest,
  enterUserCode,
  showDeviceRequest,
  type VerificationFailure,
} from '../oauth/endpoints/device-verification.ts';
import { PATHS } from '../oauth/endpoints/discovery.ts';
import { endSessionEndpoint } from '../oauth/endpoints/end-session.ts';
import { LENIENT_FORM, type LenientBody, parseParamsLenient } from './form.ts';
import { registerMfaPages } from './mfa-pages.ts';
import { stylesheet } from './views/layout.ts';
import {
  consentPage,
  consentsPage,
  deviceConfirmPage,
  deviceDonePage,
  deviceEntryPage,
  errorPage,
  loggedOutPage,
  loginPage,
  logoutConfirmPage,
} from './views/pages.ts';
import { WEBAUTHN_SCRIPT } from './views/webauthn-script.ts';

/**
 * The browser-facing routes: /authorize, /login, /consent, /logout (end_session_endpoint), /account/consents, the
 * device verification page (/device, /device/confirm) and the stylesheet. HTML pages get a strict CSP (no inline script or style), no framing, no referrer, no caching.
 */

/** The request's correlation facts; with the browser's session once it is signed in (an anonymous one is not). */
export function meta(req: FastifyRequest, s?: LoadedSession): RequestMeta {
  return {
    requestId: String(req.id),
    ip: req.ip,
    userAgent: req.headers['user-agent'],
    sessionId: s?.user ? s.sid : null,
  };
}

/**
 * The session cookie. `__Host-` + Secure whenever the issuer is https (the prefix makes the browser refuse a cookie
 * that is not Secure, not Path=/ or carries a Domain, so a sibling subdomain cannot plant or overwrite it). Browsers
 * refuse Secure cookies over plain http, so an http issuer (loopback development and tests only) gets the same
 * cookie without the prefix and without Secure.
 */
export function sessionCookieName(issuer: string): string {
  return issuer.startsWith('https://') ? '__Host-portcullis' : 'portcullis';
}

export function cookieHeader(issuer: string, value: string, clear = false): string {
  const secure = issuer.startsWith('https://');
  return `${sessionCookieName(issuer)}=${clear ? '' : value}; Path=/; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}${clear ? '; Max-Age=0' : ''}`;
}

function readCookie(req: FastifyRequest, name: string): string | undefined {
  const header = req.headers.cookie;
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** A CSP form-action source for where a form's redirect chain may end (Chromium checks form-action on redirects). */
export function formTarget(uri: string | undefined): string | undefined {
  if (!uri) return undefined;
  try {
    const u = new URL(uri);
    if (u.protocol === 'http:' || u.protocol === 'https:') return u.origin;
    return /^[a-z][a-z0-9+.-]*:$/.test(u.protocol) ? u.protocol : undefined;
  } catch {
    return undefined;
  }
}

/** What a page may load beyond the default: the WebAuthn script (MFA pages), data: images (the TOTP QR code). */
export interface PageAllowances {
  script?: boolean;
  dataImages?: boolean;
}

function pageCsp(formTargets: Array<string | undefined>, allow: PageAllowances = {}): string {
  const extra = [...new Set(formTargets.filter((t): t is string => !!t))].join(' ');
  return `default-src 'none'; style-src 'self'; img-src 'self' https:${allow.dataImages ? ' data:' : ''};${allow.script ? " script-src 'self';" : ''} form-action 'self'${extra ? ` ${extra}` : ''}; frame-ancestors 'none'; base-uri 'none'`;
}

export function sendPage(
  reply: FastifyReply,
  status: number,
  body: string,
  formTargets: Array<string | undefined> = [],
  allow: PageAllowances = {},
) {
  return reply
    .code(status)
    .headers({
      'content-type': 'text/html; charset=utf-8',
      'cache-control': 'no-store',
      pragma: 'no-cache',
      'content-security-policy': pageCsp(formTargets, allow),
      // No window opened from another origin keeps a handle on our pages.
      'cross-origin-opener-policy': 'same-origin',
    })
    .send(body);
}

/**
 * return_to must be a path on this server: it starts with one "/" and never "//" or "/\" (which browsers read as
 * another host), and carries no scheme, no control characters (an open redirector otherwise).
 */
export function safeReturnTo(v: string | undefined): string | undefined {
  if (v === undefined || v === '') return '/account/consents';
  if (!/^\/(?![/\\])/.test(v) || v.includes('\\') || v.length > 4096) return undefined;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return undefined;
  }
  return v;
}

export function registerPages(app: FastifyInstance, ctx: OAuthContext, maxTokenLifetime: () => number): void {
  const cfg = ctx.config;
  const css = stylesheet(cfg);
  const cookieName = sessionCookieName(cfg.issuer);

  const session = (req: FastifyRequest) => loadSession(ctx, readCookie(req, cookieName), meta(req));
  const ensureSession = async (req: FastifyRequest, reply: FastifyReply): Promise<LoadedSession> => {
    const s = await session(req);
    if (s) return s;
    const fresh = await startAnonymousSession(ctx);
    reply.header('set-cookie', cookieHeader(cfg.issuer, fresh.cookieValue));
    return fresh;
  };
  const showError = (reply: FastifyReply, status: number, error: string, description: string) =>
    sendPage(reply, status, errorPage({ config: cfg, error, description }));
  const params = (req: FastifyRequest): { params: Record<string, string>; repeated: string[] } => {
    if (req.method === 'GET') {
      const q = req.url.indexOf('?');
      return parseParamsLenient(q === -1 ? '' : req.url.slice(q + 1), cfg.limits.parameter_bytes);
    }
    const body = req.body as LenientBody | undefined;
    if (body?.[LENIENT_FORM]) return { params: body.params, repeated: body.repeated };
    if (body === undefined || body === null) return { params: Object.create(null), repeated: [] };
    throw new InvalidRequest('the request body must be application/x-www-form-urlencoded');
  };

  const answer = async (
    req: FastifyRequest,
    reply: FastifyReply,
    out: AuthorizeOutcome,
    s: LoadedSession | undefined,
  ) => {
    switch (out.kind) {
      case 'error_page':
        return showError(reply, out.status, out.error, out.description);
      case 'redirect':
        // RFC 9700 §4.11: 303 so a POSTed form is never re-posted to the client.
        return reply.code(303).header('cache-control', 'no-store').header('location', out.location).send();
      case 'login': {
        const q = new URLSearchParams({ return_to: out.returnTo });
        if (out.loginHint) q.set('login_hint', out.loginHint);
        return reply.code(303).header('cache-control', 'no-store').header('location', `/login?${q}`).send();
      }
      case 'mfa':
        return reply.code(303).header('cache-control', 'no-store').header('location', mfaLocation(out)).send();
      case 'consent': {
        const sess = s ?? (await ensureSession(req, reply));
        return sendPage(
          reply,
          200,
          consentPage({
            config: cfg,
            csrf: csrfToken(sess.cookieValue),
            client: out.request.client,
            scopes: out.request.scopes,
            resources: out.request.resources,
            requestUri: out.requestUri,
            username: sess.user?.username ?? '',
          }),
          [formTarget(out.request.redirectUri)],
        );
      }
    }
  };

  app.get('/assets/portcullis.css', async (_req, reply) =>
    reply.header('cache-control', 'public, max-age=3600').type('text/css; charset=utf-8').send(css),
  );
  app.get('/assets/webauthn.js', async (_req, reply) =>
    reply
      .header('cache-control', 'public, max-age=3600')
      .header('x-content-type-options', 'nosniff')
      .type('text/javascript; charset=utf-8')
      .send(WEBAUTHN_SCRIPT),
  );

  const authorize = async (req: FastifyRequest, reply: FastifyReply) => {
    await ctx.refresh();
    let p: ReturnType<typeof params>;
    try {
      p = params(req);
    } catch (e) {
      return showError(reply, 400, 'invalid_request', (e as InvalidRequest).description ?? 'malformed request');
    }
    const s = await session(req);
    const out = await authorizeEndpoint(ctx, { ...p, session: s }, meta(req, s));
    return answer(req, reply, out, s);
  };
  app.get(PATHS.authorize, authorize);
  app.post(PATHS.authorize, authorize);

  app.get('/login', async (req, reply) => {
    const { params: q } = params(req);
    const returnTo = safeReturnTo(q.return_to);
    if (!returnTo) return showError(reply, 400, 'invalid_request', 'return_to must be a path on this server');
    const s = await ensureSession(req, reply);
    // Show which application the sign-in is for, and let the form's redirect chain end at its redirect_uri.
    const pending = await pendingRequest(ctx, returnTo);
    return sendPage(
      reply,
      200,
      loginPage({
        config: cfg,
        csrf: csrfToken(s.cookieValue),
        returnTo,
        username: q.login_hint,
        client: pending?.client,
      }),
      [formTarget(pending?.redirectUri)],
    );
  });

  app.post('/login', async (req, reply) => {
    const { params: f } = params(req);
    const s = await session(req);
    const tooMany = (retryAfter: number, username: string, returnTo: string | undefined) => {
      reply.header('retry-after', String(retryAfter));
      const error = `Too many sign-in attempts. Try again in ${waitText(retryAfter)}.`;
      if (!s || !returnTo) return showError(reply, 429, 'too_many_requests', error);
      return sendPage(
        reply,
        429,
        loginPage({ config: cfg, csrf: csrfToken(s.cookieValue), returnTo, username, error }),
      );
    };
    // Per-IP and global limits on attempts (throttle.login_*), before any work is done for the request.
    const limited = await limitRequest(ctx, 'login', meta(req, s));
    if (limited) return tooMany(limited.retryAfter, '', safeReturnTo(f.return_to));
    if (!s || !checkCsrf(s.cookieValue, f.csrf_token))
      return showError(
        reply,
        403,
        'invalid_csrf_token',
        'The form expired or did not come from this site. Go back and try again.',
      );
    const returnTo = safeReturnTo(f.return_to);
    if (!returnTo) return showError(reply, 400, 'invalid_request', 'return_to must be a path on this server');
    const username = (f.username ?? '').normalize('NFKC').slice(0, 256);
    const result = await authenticatePassword(ctx, username, f.password ?? '', meta(req));
    if (!result.ok && result.reason === 'throttled') return tooMany(result.retryAfter ?? 1, username, returnTo);
    const pending = await pendingRequest(ctx, returnTo);
    if (!result.ok)
      // One message for unknown user, wrong password, disabled and locked account (no account enumeration).
      return sendPage(
        reply,
        401,
        loginPage({
          config: cfg,
          csrf: csrfToken(s.cookieValue),
          returnTo,
          username,
          error: 'Wrong username or password.',
          client: pending?.client,
        }),
        [formTarget(pending?.redirectUri)],
      );
    const fresh = await signIn(ctx, { user: result.user, previous: s, amr: ['pwd'], acr: ACR_PASSWORD }, meta(req));
    // A user with a second factor goes straight to it (mfa.require_enrolled); policy is checked again wherever the
    // session is used (authorize, consent, device, account pages).
    const status = await mfaStatus(ctx.storage, result.user.id);
    const next =
      status.enrolled && requiredLevel(cfg, { enrolled: true }) >= 2
        ? mfaLocation({ returnTo, level: 2, enrolled: true })
        : returnTo;
    return reply
      .code(303)
      .header('set-cookie', cookieHeader(cfg.issuer, fresh.cookieValue))
      .header('cache-control', 'no-store')
      .header('location', next)
      .send();
  });

  app.post('/consent', async (req, reply) => {
    const { params: f } = params(req);
    const s = await session(req);
    if (!s || !checkCsrf(s.cookieValue, f.csrf_token))
      return showError(
        reply,
        403,
        'invalid_csrf_token',
        'The form expired or did not come from this site. Go back and try again.',
      );
    if (!f.client_id || !f.request_uri || (f.decision !== 'approve' && f.decision !== 'deny'))
      return showError(reply, 400, 'invalid_request', 'the consent form is incomplete');
    const out = await decideConsent(
      ctx,
      { clientId: f.client_id, requestUri: f.request_uri, approve: f.decision === 'approve', session: s },
      meta(req, s),
    );
    return answer(req, reply, out, s);
  });

  const logout = async (req: FastifyRequest, reply: FastifyReply) => {
    let p: ReturnType<typeof params>;
    try {
      p = params(req);
    } catch (e) {
      return showError(reply, 400, 'invalid_request', (e as InvalidRequest).description ?? 'malformed request');
    }
    const s = await session(req);
    const { csrf_token: token, ...rest } = p.params;
    // A POST carrying this session's CSRF token is the user's own confirmation; anything else must be confirmed.
    const confirmed = req.method === 'POST' && !!s && checkCsrf(s.cookieValue, token);
    const out = await endSessionEndpoint(
      ctx,
      { params: rest, repeated: p.repeated, session: s, confirmed },
      meta(req, s),
    );
    if (out.kind === 'error_page') return showError(reply, out.status, out.error, out.description);
    if (out.kind === 'confirm')
      return sendPage(
        reply,
        200,
        logoutConfirmPage({ config: cfg, csrf: csrfToken(s!.cookieValue), client: out.client, params: out.params }),
        [formTarget(out.params.post_logout_redirect_uri)],
      );
    reply.header('set-cookie', cookieHeader(cfg.issuer, '', true));
    if (out.location)
      return reply.code(303).header('cache-control', 'no-store').header('location', out.location).send();
    return sendPage(reply, 200, loggedOutPage({ config: cfg }));
  };
  app.get(PATHS.endSession, logout);
  app.post(PATHS.endSession, logout);

  app.get('/account/consents', async (req, reply) => {
    const s = await session(req);
    if (!s?.user)
      return reply
        .code(303)
        .header('cache-control', 'no-store')
        .header('location', '/login?return_to=%2Faccount%2Fconsents')
        .send();
    const list = await ctx.storage.consents.listByUser(s.user.id);
    const consents = await Promise.all(
      list.map(async (c) => ({ consent: c, client: await ctx.clients.get(c.client_id) })),
    );
    const { params: q } = params(req);
    return sendPage(
      reply,
      200,
      consentsPage({
        config: cfg,
        csrf: csrfToken(s.cookieValue),
        username: s.user.username,
        consents,
        message: q.withdrawn ? `Access withdrawn for ${q.withdrawn}.` : undefined,
      }),
    );
  });

  app.post('/account/consents/withdraw', async (req, reply) => {
    const { params: f } = params(req);
    const s = await session(req);
    if (!s?.user || !checkCsrf(s.cookieValue, f.csrf_token))
      return showError(
        reply,
        403,
        'invalid_csrf_token',
        'The form expired or did not come from this site. Go back and try again.',
      );
    if (!f.client_id) return showError(reply, 400, 'invalid_request', 'client_id is required');
    await withdrawConsent(ctx, s.user.id, f.client_id, meta(req, s), maxTokenLifetime());
    return reply
      .code(303)
      .header('cache-control', 'no-store')
      .header('location', `/account/consents?withdrawn=${encodeURIComponent(f.client_id)}`)
      .send();
  });

  registerDevicePages(app, ctx, { session, params, showError });
  registerMfaPages(app, ctx, { session, params, showError });
}

/** Where a session that lacks a factor goes: the factor step, or enrolment when the user has none. */
export function mfaLocation(o: { returnTo: string; level: number; enrolled: boolean }): string {
  return o.enrolled
    ? `/mfa?${new URLSearchParams({ return_to: o.returnTo, level: String(o.level) })}`
    : `/account/security?${new URLSearchParams({ return_to: o.returnTo, required: String(o.level) })}`;
}

/** What the person reads when a code is refused (one text for unknown, expired and used: no oracle). */
const DEVICE_CODE_ERRORS: Record<Exclude<VerificationFailure, 'throttled'>, string> = {
  malformed: 'That is not a valid code. Codes have 8 letters, like BCDF-GHJK.',
  unknown: 'That code is not valid or has expired. Check the code on your device, or start again there.',
  expired: 'That code is not valid or has expired. Check the code on your device, or start again there.',
  already_decided: 'That code is not valid or has expired. Check the code on your device, or start again there.',
};

/**
 * RFC 8628 §3.3 verification page. GET /device shows the code form (prefilled from verification_uri_complete's
 * user_code, never submitted by itself); POST /device checks the code (throttled) and answers 303 to the
 * confirmation page; POST /device/confirm approves or denies and answers 303. Every step requires a signed-in
 * session (the login page returns here); every POST requires the session's CSRF token.
 */
function registerDevicePages(
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
  const toLogin = (reply: FastifyReply, returnTo: string) =>
    see(reply, `/login?${new URLSearchParams({ return_to: returnTo })}`);
  const signedIn = (s: LoadedSession | undefined): s is LoadedSession & { user: NonNullable<LoadedSession['user']> } =>
    s?.user !== undefined && s.record.auth_time !== null;
  const csrfRefused = (reply: FastifyReply) =>
    h.showError(
      reply,
      403,
      'invalid_csrf_token',
      'The form expired or did not come from this site. Go back and try again.',
    );

  app.get(PATHS.device, async (req, reply) => {
    const { params: q } = h.params(req);
    // Only a well-formed code is carried through sign-in and shown; anything else is dropped.
    const code = normaliseUserCode(q.user_code);
    const display = code ? formatUserCode(code) : undefined;
    if (q.result === 'approved' || q.result === 'denied')
      return sendPage(reply, 200, deviceDonePage({ config: cfg, approved: q.result === 'approved' }));
    const s = await h.session(req);
    if (!signedIn(s)) return toLogin(reply, display ? `${PATHS.device}?user_code=${display}` : PATHS.device);
    return sendPage(
      reply,
      200,
      deviceEntryPage({ config: cfg, csrf: csrfToken(s.cookieValue), username: s.user.username, userCode: display }),
    );
  });

  app.post(PATHS.device, async (req, reply) => {
    const { params: f } = h.params(req);
    const s = await h.session(req);
    if (!s || !checkCsrf(s.cookieValue, f.csrf_token)) return csrfRefused(reply);
    if (!signedIn(s)) return toLogin(reply, PATHS.device);
    const page = (status: number, error: string) =>
      sendPage(
        reply,
        status,
        deviceEntryPage({ config: cfg, csrf: csrfToken(s.cookieValue), username: s.user.username, error }),
      );
    if (!f.user_code?.trim()) return page(400, 'Enter the code shown on your device.');
    const limited = await limitRequest(ctx, 'device', meta(req, s));
    if (limited) {
      reply.header('retry-after', String(limited.retryAfter));
      return page(429, `Too many attempts. Try again in ${waitText(limited.retryAfter)}.`);
    }
    const out = await enterUserCode(ctx, { session: s, userCode: f.user_code }, meta(req, s));
    switch (out.kind) {
      case 'ticket':
        return see(reply, `${PATHS.device}/confirm?${new URLSearchParams({ request_uri: out.requestUri })}`);
      case 'invalid':
        return page(400, DEVICE_CODE_ERRORS[out.reason]);
      case 'mfa':
        return see(
          reply,
          mfaLocation({
            ...out,
            returnTo: `${PATHS.device}?user_code=${formatUserCode(normaliseUserCode(f.user_code) ?? '')}`,
          }),
        );
      case 'throttled':
        reply.header('retry-after', String(out.retryAfter));
        return page(
          429,
          `Too many wrong codes. For your safety, codes are not accepted here for ${Math.ceil(out.retryAfter / 60)} minute(s).`,
        );
    }
  });

  const gone = (reply: FastifyReply) =>
    h.showError(
      reply,
      400,
      'invalid_request',
      'This device request is no longer waiting for an answer. Enter the code from your device again.',
    );

  app.get(`${PATHS.device}/confirm`, async (req, reply) => {
    const { params: q } = h.params(req);
    const s = await h.session(req);
    if (!signedIn(s)) return toLogin(reply, PATHS.device);
    const out = await showDeviceRequest(ctx, { session: s, requestUri: q.request_uri });
    if (out.kind === 'gone') return gone(reply);
    return sendPage(
      reply,
      200,
      deviceConfirmPage({
        config: cfg,
        csrf: csrfToken(s.cookieValue),
        client: out.client,
        scopes: out.device.scope.split(' ').filter(Boolean),
        resources: out.device.resources,
        userCode: out.userCode,
        requestUri: out.requestUri,
        username: s.user.username,
      }),
    );
  });

  app.post(`${PATHS.device}/confirm`, async (req, reply) => {
    const { params: f } = h.params(req);
    const s = await h.session(req);
    if (!s || !checkCsrf(s.cookieValue, f.csrf_token)) return csrfRefused(reply);
    if (!signedIn(s)) return toLogin(reply, PATHS.device);
    if (f.decision !== 'approve' && f.decision !== 'deny')
      return h.showError(reply, 400, 'invalid_request', 'the form is incomplete');
    const out = await decideDeviceRequest(
      ctx,
      { session: s, requestUri: f.request_uri, approve: f.decision === 'approve' },
      meta(req, s),
    );
    if (out.kind === 'gone') return gone(reply);
    if (out.kind === 'mfa') return see(reply, mfaLocation({ ...out, returnTo: PATHS.device }));
    return see(reply, `${PATHS.device}?result=${out.approved ? 'approved' : 'denied'}`);
  });
}

/** "45 seconds", "3 minutes": how long a throttled person should wait. */
export function waitText(seconds: number): string {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? '' : 's'}`;
  const m = Math.ceil(seconds / 60);
  return `${m} minute${m === 1 ? '' : 's'}`;
}

/** The client and redirect_uri of the request a sign-in continues, when return_to points at a stored one. */
export async function pendingRequest(
  ctx: OAuthContext,
  returnTo: string,
): Promise<
  { client: Awaited<ReturnType<OAuthContext['clients']['get']>>; redirectUri: string | undefined } | undefined
> {
  if (!returnTo.startsWith(`${PATHS.authorize}?`)) return undefined;
  const q = new URLSearchParams(returnTo.slice(PATHS.authorize.length + 1));
  const uri = q.get('request_uri');
  if (!uri?.startsWith(REQUEST_URI_PREFIX)) return undefined;
  const rec = await ctx.storage.authorizationRequests.get(sha256Hex(uri.slice(REQUEST_URI_PREFIX.length)));
  if (!rec || rec.client_id !== q.get('client_id')) return undefined;
  return { client: await ctx.clients.get(rec.client_id), redirectUri: rec.params.redirect_uri };
}
