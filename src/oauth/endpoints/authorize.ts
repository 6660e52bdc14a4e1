import {
  AccessDenied,
  ConsentRequired,
  InvalidRequest,
  LoginRequired,
  type OAuthError,
} from '../../errors/oauth-error.ts';
import { type MfaLevel, mfaGap } from '../../identity/mfa.ts';
import type { LoadedSession } from '../../identity/sessions.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import { issueAuthorizationCode } from '../authorization/code.ts';
import { withQuery } from '../authorization/redirect-uri.ts';
import {
  AuthorizationPageError,
  AuthorizationRedirectError,
  type AuthorizationRequest,
  consumeRequestUri,
  externalParams,
  resolveClientAndRedirect,
  storeAuthorizationRequest,
  validateAuthorizationParams,
} from '../authorization/request.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';

export type AuthorizeOutcome =
  /** The client or redirect_uri is not trustworthy: show an error page (never redirect). */
  | { kind: 'error_page'; status: number; error: string; description: string }
  /** The authorization response (a code or an error), to the client's redirect_uri. */
  | { kind: 'redirect'; location: string }
  /** The user must sign in first; then come back to returnTo (a relative URL). */
  | { kind: 'login'; returnTo: string; loginHint: string | undefined; client: ClientRecord }
  /**
   * The session is signed in but not strongly enough (policy, acr_values, phishing-resistant scopes): the second
   * factor, or enrolment of one when the user has none; then come back to returnTo.
   */
  | { kind: 'mfa'; returnTo: string; level: MfaLevel; enrolled: boolean }
  /** The user must approve; the consent form posts requestUri back. */
  | { kind: 'consent'; requestUri: string; request: AuthorizationRequest };

export interface AuthorizeInput {
  params: Record<string, string>;
  /** Parameter names that appeared more than once (RFC 6749 §3.1: MUST NOT be repeated). */
  repeated: string[];
  session: LoadedSession | undefined;
}

/** The authorization response for an error, with state and iss (RFC 6749 §4.1.2.1, RFC 9207 §2). */
export function errorRedirect(ctx: OAuthContext, e: AuthorizationRedirectError): string {
  return withQuery(e.redirectUri, {
    error: e.oauth.code,
    error_description: e.oauth.description,
    state: e.state,
    iss: ctx.config.issuer,
  });
}

async function recordFailure(
  ctx: OAuthContext,
  clientId: string | null,
  e: OAuthError | AuthorizationPageError,
  meta: RequestMeta,
  endpoint: string,
  sentClientId?: string | null,
) {
  await ctx.storage.events.append({
    type: 'authorization.failed',
    at: ctx.clock.nowMs(),
    client_id: clientId,
    ...correlation(meta),
    data: {
      error: e instanceof AuthorizationPageError ? e.error : e.code,
      description: e.description,
      endpoint,
      ...(clientId === null && sentClientId ? { client_id_sent: sentClientId.slice(0, 128) } : {}),
    },
  });
}

/**
 * RFC 6749 §4.1.1 / OIDC Core §3.1.2 authorization endpoint, as a short list of steps:
 * 1. a pushed or stored request replaces the query (RFC 9126 §4);
 * 2. the client and redirect_uri, by exact match (errors: page);
 * 3. every other parameter (errors: redirect with iss);
 * 4. the session: sign-in needed? (prompt, max_age; prompt=none -> login_required); then a second factor needed?
 *    (mfa.required, the client's require_mfa, acr_values step-up, phishing-resistant scopes, OIDC Core §3.1.2.1);
 * 5. consent needed? (remembered per user, client, scopes; prompt=none -> consent_required);
 * 6. issue the code.
 */
export async function authorizeEndpoint(
  ctx: OAuthContext,
  input: AuthorizeInput,
  meta: RequestMeta,
): Promise<AuthorizeOutcome> {
  const sentClientId = input.params.client_id ?? null;
  // The client_id column only ever holds a client we know; what was sent goes into the data, truncated.
  let clientId: string | null = null;
  try {
    // 1. The repeated-parameter rule first for the two parameters that decide where errors may go.
    if (input.repeated.includes('client_id') || input.repeated.includes('redirect_uri'))
      throw new AuthorizationPageError('invalid_request', 'client_id and redirect_uri must not be repeated');
    let params = externalParams(input.params);
    let pushed = false;
    if (params.request_uri !== undefined) {
      if (!sentClientId) throw new AuthorizationPageError('invalid_request', 'the request has no client_id');
      if (input.repeated.includes('request_uri'))
        throw new AuthorizationPageError('invalid_request', 'request_uri must not be repeated');
      try {
        const stored = await consumeRequestUri(ctx, params.request_uri, sentClientId);
        // RFC 9126 §4: only the pushed parameters count; client_id must match (checked by consume).
        params = stored.params;
        pushed = true;
      } catch (e) {
        const oe = e as OAuthError;
        throw new AuthorizationPageError(oe.code ?? 'invalid_request_uri', oe.description ?? 'bad request_uri');
      }
    }
    // 2.
    const { client, redirectUri } = await resolveClientAndRedirect(ctx, params);
    clientId = client.client_id;
    // 3.
    if (!pushed && input.repeated.length)
      throw new AuthorizationRedirectError(
        new InvalidRequest(`parameter ${input.repeated[0]!.slice(0, 40)} is repeated`),
        client,
        redirectUri,
        input.repeated.includes('state') ? undefined : params.state,
      );
    const req = validateAuthorizationParams(ctx, client, redirectUri, params, { pushed });
    const fail = (e: OAuthError): never => {
      throw new AuthorizationRedirectError(e, client, redirectUri, req.state);
    };
    const now = ctx.clock.nowMs();

    // 4. OIDC Core §3.1.2.3: sign in when there is no session, prompt=login, or max_age has passed.
    const s = input.session;
    const signedIn = s?.user !== undefined && s.record.auth_time !== null;
    const authTime = s?.record.auth_time ?? 0;
    const freshEnough = req.loginAfter !== undefined && authTime >= req.loginAfter;
    const needLogin =
      !signedIn ||
      (req.loginAfter !== undefined && !freshEnough) ||
      (!freshEnough && req.prompt.has('login')) ||
      (!freshEnough && req.maxAge !== undefined && now - authTime > req.maxAge * 1000);
    if (needLogin) {
      if (req.prompt.has('none')) fail(new LoginRequired('the user is not signed in (or must sign in again)'));
      const wait = { ...req.params };
      // After this sign-in the request's prompt=login / max_age are satisfied: remember when we asked.
      if (req.prompt.has('login') || req.maxAge !== undefined) wait._login_after = String(now);
      if (req.prompt.has('login')) wait.prompt = [...req.prompt].filter((p) => p !== 'login').join(' ');
      if (!wait.prompt) delete wait.prompt;
      const { requestUri } = await storeAuthorizationRequest(
        ctx,
        'interaction',
        client.client_id,
        wait,
        ctx.config.authorization.interaction_ttl,
      );
      return {
        kind: 'login',
        returnTo: `/authorize?client_id=${encodeURIComponent(client.client_id)}&request_uri=${encodeURIComponent(requestUri)}`,
        loginHint: req.loginHint,
        client,
      };
    }
    const session = s!;
    const userId = session.user!.id;

    // 4b. Step-up: the existing session is kept and only the missing factor is asked for.
    const gap = await mfaGap(ctx, session, { client, scopes: req.scopes, acrValues: req.acrValues });
    if (gap) {
      if (req.prompt.has('none'))
        fail(new LoginRequired('the request needs a second factor the session has not passed'));
      const { requestUri } = await storeAuthorizationRequest(
        ctx,
        'interaction',
        client.client_id,
        req.params,
        ctx.config.authorization.interaction_ttl,
      );
      return {
        kind: 'mfa',
        returnTo: `/authorize?client_id=${encodeURIComponent(client.client_id)}&request_uri=${encodeURIComponent(requestUri)}`,
        level: gap.level,
        enrolled: gap.enrolled,
      };
    }

    // 5. Consent, remembered per user, client and scopes (and resources).
    const consent = await ctx.storage.consents.get(userId, client.client_id);
    const consented = new Set(consent?.scope.split(' ') ?? []);
    const covered =
      !!consent &&
      req.scopes.every((x) => consented.has(x)) &&
      req.resources.every((r) => consent.resources.includes(r));
    if (!covered || req.prompt.has('consent')) {
      if (req.prompt.has('none')) fail(new ConsentRequired('the user has not approved this client for these scopes'));
      const { requestUri } = await storeAuthorizationRequest(
        ctx,
        'interaction',
        client.client_id,
        req.params,
        ctx.config.authorization.interaction_ttl,
      );
      return { kind: 'consent', requestUri, request: req };
    }

    // 6.
    const { location } = await ctx.storage.withTransaction((tx) =>
      issueAuthorizationCode(
        ctx,
        tx,
        req,
        { ...session.record, user_id: userId, auth_time: session.record.auth_time! },
        meta,
      ),
    );
    return { kind: 'redirect', location };
  } catch (e) {
    if (e instanceof AuthorizationPageError) {
      await recordFailure(ctx, clientId, e, meta, 'authorize', sentClientId);
      return { kind: 'error_page', status: e.status, error: e.error, description: e.description };
    }
    if (e instanceof AuthorizationRedirectError) {
      await recordFailure(ctx, e.client.client_id, e.oauth, meta, 'authorize');
      return { kind: 'redirect', location: errorRedirect(ctx, e) };
    }
    throw e;
  }
}

/**
 * The consent form's answer. The stored request is consumed (single use); approval records the consent and issues
 * the code in one transaction; refusal answers access_denied.
 */
export async function decideConsent(
  ctx: OAuthContext,
  input: { clientId: string; requestUri: string; approve: boolean; session: LoadedSession | undefined },
  meta: RequestMeta,
): Promise<AuthorizeOutcome> {
  try {
    let stored: Awaited<ReturnType<typeof consumeRequestUri>>;
    try {
      stored = await consumeRequestUri(ctx, input.requestUri, input.clientId);
    } catch (e) {
      throw new AuthorizationPageError('invalid_request_uri', (e as OAuthError).description);
    }
    if (stored.kind !== 'interaction')
      throw new AuthorizationPageError('invalid_request_uri', 'this request was not waiting for consent');
    const { client, redirectUri } = await resolveClientAndRedirect(ctx, stored.params);
    const req = validateAuthorizationParams(ctx, client, redirectUri, stored.params, { pushed: true });
    const s = input.session;
    if (!s?.user || s.record.auth_time === null)
      throw new AuthorizationRedirectError(new LoginRequired('the session ended'), client, redirectUri, req.state);
    const user = s.user;
    const now = ctx.clock.nowMs();
    // The consent form can be posted by hand: the factor check is repeated here.
    if (input.approve && (await mfaGap(ctx, s, { client, scopes: req.scopes, acrValues: req.acrValues })))
      throw new AuthorizationRedirectError(
        new LoginRequired('the session has not passed the second factor this request needs'),
        client,
        redirectUri,
        req.state,
      );
    if (!input.approve) {
      await ctx.storage.events.append({
        type: 'consent.denied',
        at: now,
        client_id: client.client_id,
        subject: user.id,
        ...correlation(meta),
        data: { scope: req.scopes.join(' ') },
      });
      throw new AuthorizationRedirectError(new AccessDenied('the user refused'), client, redirectUri, req.state);
    }
    const { location } = await ctx.storage.withTransaction(async (tx) => {
      const c = await tx.consents.grant(user.id, client.client_id, req.scopes, req.resources, now);
      await tx.events.append({
        type: 'consent.granted',
        at: now,
        client_id: client.client_id,
        subject: user.id,
        ...correlation(meta),
        data: { scope: req.scopes.join(' '), resources: req.resources, consented: c.scope },
      });
      return issueAuthorizationCode(
        ctx,
        tx,
        req,
        { ...s.record, user_id: user.id, auth_time: s.record.auth_time! },
        meta,
      );
    });
    return { kind: 'redirect', location };
  } catch (e) {
    if (e instanceof AuthorizationPageError)
      return { kind: 'error_page', status: e.status, error: e.error, description: e.description };
    if (e instanceof AuthorizationRedirectError) {
      if (e.oauth.code !== 'access_denied') await recordFailure(ctx, e.client.client_id, e.oauth, meta, 'consent');
      return { kind: 'redirect', location: errorRedirect(ctx, e) };
    }
    throw e;
  }
}
