import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify';
import { InvalidRequest, OAuthError, RateLimited, ServerError, toErrorResponse } from '../errors/oauth-error.ts';
import { type LimitedAction, limitRequest } from '../identity/rate-limits.ts';
import type { OffsetClock } from '../lib/clock.ts';
import { randomId } from '../lib/crypto.ts';
import type { ClientAuthInput } from '../oauth/client-auth/authenticate.ts';
import type { OAuthContext, RequestMeta } from '../oauth/context.ts';
import { currentDpopNonce } from '../oauth/dpop.ts';
import { deviceAuthorizationEndpoint } from '../oauth/endpoints/device-authorization.ts';
import { discoveryDocument, PATHS } from '../oauth/endpoints/discovery.ts';
import { introspectionEndpoint } from '../oauth/endpoints/introspect.ts';
import { parEndpoint } from '../oauth/endpoints/par.ts';
import { revocationFeedEndpoint } from '../oauth/endpoints/revocation-feed.ts';
import { revocationEndpoint } from '../oauth/endpoints/revoke.ts';
import { tokenEndpoint } from '../oauth/endpoints/token.ts';
import { userinfoEndpoint } from '../oauth/endpoints/userinfo.ts';
import { registerAdminApi } from './admin.ts';
import { LENIENT_FORM, NOT_FORM, parseForm, parseParamsLenient, type RawBody } from './form.ts';
import type { HttpMetrics } from './metrics.ts';
import { registerPages } from './pages.ts';

export interface AppOptions {
  ctx: OAuthContext;
  /** Longest access token lifetime plus skew (seconds): how long a grant revocation record must live. */
  maxTokenLifetime: () => number;
  metrics: HttpMetrics;
  /** Readiness: storage reachable and a key can sign. */
  ready: () => Promise<boolean>;
  /** Present only when PORTCULLIS_TEST_CLOCK=1: lets black-box tests move time. */
  testClock?: { clock: OffsetClock; onAdvance: () => Promise<unknown> };
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
  'x-frame-options': 'DENY',
};

function meta(req: FastifyRequest): RequestMeta {
  return { requestId: String(req.id), ip: req.ip, userAgent: req.headers['user-agent'] };
}

/** The form parameters, or invalid_request when the body was not a form (RFC 6749 §3.2: form-encoded only). */
function formInput(req: FastifyRequest): ClientAuthInput {
  const body = req.body as Record<string, string> | RawBody | undefined;
  if (body === undefined || body === null) {
    if (req.headers['content-length'] === undefined || req.headers['content-length'] === '0')
      return { authorization: req.headers.authorization, params: Object.create(null) };
  }
  if (!body || (body as RawBody)[NOT_FORM])
    throw new InvalidRequest('the request body must be application/x-www-form-urlencoded');
  return { authorization: req.headers.authorization, params: body as Record<string, string> };
}

function sendError(reply: FastifyReply, err: OAuthError): FastifyReply {
  const { status, headers, body } = toErrorResponse(err);
  return reply
    .code(status)
    .headers({ 'cache-control': 'no-store', pragma: 'no-cache', ...headers })
    .send(body);
}

export async function buildApp(opts: AppOptions) {
  const { ctx, metrics } = opts;
  const { limits } = ctx.config;
  const app = Fastify({
    loggerInstance: ctx.log,
    // No per-request child logger: building one (with redaction) per request costs more than the request's own
    // logic; log lines carry request_id explicitly instead.
    childLoggerFactory: (logger) => logger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: limits.body_bytes,
    genReqId: () => randomId(),
    trustProxy: false,
    return503OnClosing: true,
    // Bounded, boring parsing: no prototype poisoning, no huge URLs.
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
  });

  app.removeAllContentTypeParsers();
  // Browser-facing endpoints decide themselves what a repeated parameter means (a redirect to a trusted client
  // with invalid_request at /authorize), so their forms are parsed without refusing repeats.
  const lenientPaths = new Set([
    PATHS.authorize,
    PATHS.endSession,
    '/login',
    '/consent',
    '/account/consents/withdraw',
    PATHS.device,
    `${PATHS.device}/confirm`,
    '/mfa/totp',
    '/mfa/recovery',
    '/mfa/passkey',
    '/account/security/totp',
    '/account/security/totp/remove',
    '/account/security/passkeys',
    '/account/security/passkeys/remove',
    '/account/security/recovery-codes',
  ]);
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (req, body, done) => {
    try {
      const path = req.url.split('?')[0] ?? '';
      if (lenientPaths.has(path))
        return done(null, { [LENIENT_FORM]: true, ...parseParamsLenient(body as string, limits.parameter_bytes) });
      done(null, parseForm(body as string, limits.parameter_bytes));
    } catch (e) {
      done(e as Error, undefined);
    }
  });
  app.addContentTypeParser('*', { parseAs: 'string' }, (req, body, done) => {
    done(null, { [NOT_FORM]: true, raw: body as string, contentType: req.headers['content-type'] } satisfies RawBody);
  });

  // Callback-style hooks: no promise per request.
  app.addHook('onRequest', (req, reply, done) => {
    reply.headers(SECURITY_HEADERS);
    reply.header('x-request-id', req.id);
    done();
  });
  app.addHook('onResponse', (req, reply, done) => {
    metrics.observeRequest(req.routeOptions.url ?? 'unmatched', req.method, reply.statusCode, reply.elapsedTime / 1000);
    // Access log at debug only: at info the events table is the record, and logging every token request costs.
    if (ctx.log.isLevelEnabled('debug'))
      req.log.debug(
        {
          request_id: req.id,
          method: req.method,
          route: req.routeOptions.url ?? req.url.split('?')[0],
          status: reply.statusCode,
          ms: reply.elapsedTime,
          ip: req.ip,
        },
        'request',
      );
    done();
  });

  app.setErrorHandler((err, req, reply) => {
    if (err instanceof OAuthError) return sendError(reply, err);
    const e = err as { code?: string; statusCode?: number; message?: string };
    if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return sendError(
        reply,
        new OAuthError('invalid_request', 413, `the request body exceeds ${limits.body_bytes} bytes`),
      );
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)
      return sendError(reply, new OAuthError('invalid_request', e.statusCode, 'the request is malformed'));
    req.log.error({ err, request_id: req.id }, 'unhandled error');
    return sendError(reply, new ServerError());
  });
  app.setNotFoundHandler((_req, reply) => {
    reply
      .code(404)
      .header('cache-control', 'no-store')
      .send({ error: 'not_found', error_description: 'no such endpoint' });
  });

  const tokenHeaders = { 'cache-control': 'no-store', pragma: 'no-cache' };

  // Every endpoint first brings keys, revocations and clients up to date with other processes' writes (cheap:
  // a PRAGMA on SQLite; PostgreSQL nodes follow by polling and, later, LISTEN/NOTIFY).
  /** Per-IP and global request limits (config throttle.*): 429 + Retry-After as an OAuth JSON error. */
  const limitApi = async (action: LimitedAction, req: FastifyRequest) => {
    const refused = await limitRequest(ctx, action, meta(req));
    if (refused) throw new RateLimited(refused.retryAfter);
  };
  // RFC 9449 §4.3 step 9: the proof's htu must be the URL the client addressed. That is the token_endpoint this
  // server publishes (issuer-based), not what a reverse proxy in front of it forwards as Host.
  const tokenUrl = ctx.config.issuer + PATHS.token;
  app.post(PATHS.token, async (req, reply) => {
    await limitApi('token', req);
    await ctx.refresh();
    const input = formInput(req);
    const proof = req.headers.dpop;
    if (proof !== undefined) input.dpop = { proof, method: req.method, url: tokenUrl };
    const res = await tokenEndpoint(ctx, input, meta(req));
    // RFC 9449 §8.2: with nonces required, every DPoP response hands out the current nonce for the next request.
    if (proof !== undefined && ctx.config.dpop.require_nonce) reply.header('dpop-nonce', currentDpopNonce(ctx));
    return reply.headers(tokenHeaders).send(res);
  });
  app.post(PATHS.introspect, async (req, reply) => {
    await limitApi('introspect', req);
    const res = await introspectionEndpoint(ctx, formInput(req), meta(req));
    return reply.headers(tokenHeaders).send(res);
  });
  app.post(PATHS.revoke, async (req, reply) => {
    await ctx.refresh({ force: true });
    await revocationEndpoint(ctx, formInput(req), meta(req));
    return reply.headers(tokenHeaders).send();
  });

  // The remote revocation feed (src/oauth/endpoints/revocation-feed.ts): GET with client_secret_basic and the
  // query (?after=ID&wait=S), or POST with a form (any client authentication method, e.g. private_key_jwt).
  app.get('/revocations', async (req, reply) => {
    const q = req.query as Record<string, unknown>;
    const params: Record<string, string> = Object.create(null);
    for (const k of ['after', 'wait']) if (typeof q[k] === 'string') params[k] = q[k] as string;
    const res = await revocationFeedEndpoint(ctx, { authorization: req.headers.authorization, params }, meta(req));
    return reply.headers(tokenHeaders).send(res);
  });
  app.post('/revocations', async (req, reply) => {
    const res = await revocationFeedEndpoint(ctx, formInput(req), meta(req));
    return reply.headers(tokenHeaders).send(res);
  });

  // RFC 9126 §2.2: 201 with the request_uri; errors as at the token endpoint.
  // OIDC Core §5.3.1: GET and POST; CORS-readable so browser-based clients can call it with their token.
  const userinfo = async (req: FastifyRequest, reply: FastifyReply) => {
    const input = req.method === 'POST' ? formInput(req) : { authorization: req.headers.authorization, params: {} };
    const res = await userinfoEndpoint(ctx, input, meta(req));
    return reply.headers(tokenHeaders).header('access-control-allow-origin', '*').send(res);
  };
  app.get(PATHS.userinfo, userinfo);
  app.post(PATHS.userinfo, userinfo);
  const parUrl = ctx.config.issuer + PATHS.par;
  app.post(PATHS.par, async (req, reply) => {
    await ctx.refresh();
    const input = formInput(req);
    const proof = req.headers.dpop;
    if (proof !== undefined) input.dpop = { proof, method: req.method, url: parUrl };
    const res = await parEndpoint(ctx, input, meta(req));
    if (proof !== undefined && ctx.config.dpop.require_nonce) reply.header('dpop-nonce', currentDpopNonce(ctx));
    return reply.code(201).headers(tokenHeaders).send(res);
  });
  // RFC 8628 §3.1-3.2: client authentication as at /token; the answer carries codes, so it is never cached.
  app.post(PATHS.deviceAuthorization, async (req, reply) => {
    await ctx.refresh();
    const res = await deviceAuthorizationEndpoint(ctx, formInput(req), meta(req));
    return reply.headers(tokenHeaders).send(res);
  });
  registerPages(app as unknown as FastifyInstance, ctx, opts.maxTokenLifetime);
  registerAdminApi(app as unknown as FastifyInstance, ctx);

  const publicCache = (reply: FastifyReply, maxAge: number) =>
    reply.header('cache-control', `public, max-age=${maxAge}`).header('access-control-allow-origin', '*');
  const metadata = async (_req: FastifyRequest, reply: FastifyReply) =>
    publicCache(reply, 300).send(discoveryDocument(ctx));
  app.get('/.well-known/openid-configuration', metadata);
  app.get('/.well-known/oauth-authorization-server', metadata);
  app.get(PATHS.jwks, async (_req, reply) => {
    await ctx.refresh({ force: true });
    return publicCache(reply, ctx.config.keys.jwks_max_age).type('application/jwk-set+json').send(ctx.keys.jwks());
  });

  app.get('/healthz', async (_req, reply) => reply.header('cache-control', 'no-store').send({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const ok = await opts.ready().catch(() => false);
    // Says which part is missing when the revocation feed is the reason (revocation.max_feed_lag exceeded).
    const feed = ctx.revocations.healthy(ctx.clock.nowMs()) ? 'ok' : 'down';
    return reply
      .code(ok ? 200 : 503)
      .header('cache-control', 'no-store')
      .send({ status: ok ? 'ready' : 'not_ready', revocation_feed: feed });
  });
  app.get('/metrics', async (_req, reply) =>
    reply
      .header('cache-control', 'no-store')
      .type(metrics.registry.contentType)
      .send(await metrics.registry.metrics()),
  );

  if (opts.testClock) {
    const tc = opts.testClock;
    app.post('/__test__/clock', async (req, reply) => {
      const body = req.body as RawBody | Record<string, string> | undefined;
      let advance: unknown;
      if (body && (body as RawBody)[NOT_FORM]) {
        try {
          advance = JSON.parse((body as RawBody).raw).advance_seconds;
        } catch {
          throw new InvalidRequest('body must be JSON {"advance_seconds": N}');
        }
      } else advance = (body as Record<string, string> | undefined)?.advance_seconds;
      const seconds = Number(advance ?? 0);
      if (!Number.isFinite(seconds) || seconds < 0)
        throw new InvalidRequest('advance_seconds must be a non-negative number');
      tc.clock.advance(seconds * 1000);
      const changes = await tc.onAdvance();
      return reply.header('cache-control', 'no-store').send({ now_ms: tc.clock.nowMs(), key_changes: changes });
    });
  }
  return app;
}
