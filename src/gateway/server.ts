import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { GatewayConfig } from '../config/schema.ts';
import {
  InvalidRequest,
  InvalidResourceRequest,
  OAuthError,
  RateLimited,
  ServerError,
  toErrorResponse,
} from '../errors/oauth-error.ts';
import { noteRefusal } from '../identity/rate-limits.ts';
import { randomId } from '../lib/crypto.ts';
import type { GatewayContext } from './context.ts';
import { Denial } from './denial.ts';
import { checkDpop } from './dpop-check.ts';
import { Forwarder, type ScannedHeaders, scanHeaders } from './forward.ts';
import { authorizeRequest, tokenFacts } from './policy.ts';
import { MetadataIndex, PRM_PREFIX } from './resource-metadata.ts';
import { hasTokenInQuery, hostName, isNormalPath, type Route, RouteTable, upstreamPath } from './routes.ts';
import { UsageRecorder } from './usage.ts';
import { type GatewayToken, readCredentials, TokenVerifier } from './verify-token.ts';

export interface RunningGateway {
  url: string;
  /** Stops accepting, lets in-flight requests finish, writes the last usage records. */
  close(): Promise<void>;
}

/** node:http reports IPv4 clients on a dual-stack socket as ::ffff:a.b.c.d. */
function clientIp(req: IncomingMessage): string {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/**
 * The gateway's own listener (node:http, no framework: this is the hot path). Every request is refused unless a
 * route matches it and it carries a valid, unrevoked access token for the route's resource with the scopes its
 * method needs; refusals are RFC 6750 errors and gateway.denied events, allowed requests are forwarded and counted
 * into gateway.usage.
 */
export async function startGateway(ctx: GatewayContext, g: GatewayConfig): Promise<RunningGateway> {
  const table = new RouteTable(g, g.accepted_algorithms);
  const metadata = new MetadataIndex(ctx.config);
  const verifier = new TokenVerifier(ctx, {
    algorithms: g.accepted_algorithms,
    cacheSize: g.token_cache_size,
    invalidCacheSize: g.invalid_token_cache_size,
  });
  const usage = new UsageRecorder();
  const forwarder = new Forwarder({
    connections: g.upstream_connections,
    connectTimeoutMs: g.connect_timeout * 1000,
    identityHeaderPrefix: g.identity_header_prefix,
    publicOrigin: g.public_origin,
    log: ctx.log,
  });
  const skew = g.clock_skew;
  // RFC 9449 §4.3 htu: the URL the client addressed. Behind a TLS-terminating proxy only gateway.public_origin
  // knows it; without it, the Host header over plain http (client-sent X-Forwarded-* are never believed).
  const publicOrigin = g.public_origin;

  const sendDenial = (
    req: IncomingMessage,
    res: ServerResponse,
    d: Denial,
    route: Route | undefined,
    path: string,
  ): void => {
    const requestId = randomId();
    const ip = clientIp(req);
    const t = d.token;
    const write = ctx.events.write({
      type: 'gateway.denied',
      at: ctx.clock.nowMs(),
      request_id: requestId,
      ip,
      client_id: t?.clientId ?? null,
      subject: t?.sub ?? null,
      jti: t?.jti ?? null,
      grant_id: t?.grantId ?? null,
      data: {
        reason: d.reason,
        route: route?.name ?? null,
        ip,
        method: req.method ?? '',
        path: path.slice(0, 200),
        status: d.error.status,
      },
    });
    const { status, headers, body } = toErrorResponse(d.error);
    const text = JSON.stringify(body);
    // The refusal is recorded before it is answered (group commit: many denials share one write).
    write
      .catch((err) => ctx.log.error({ err, request_id: requestId }, 'gateway.denied event not written'))
      .finally(() => {
        if (res.destroyed) return;
        res.writeHead(status, {
          ...headers,
          'content-type': 'application/json',
          'cache-control': 'no-store',
          'x-request-id': requestId,
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
      });
  };

  const pass = (
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    token: GatewayToken,
    headers: ScannedHeaders,
    path: string,
    query: string,
    now: number,
  ): void => {
    const ip = clientIp(req);
    usage.record(token, route.name, route.resource, ip, now);
    forwarder.forward({ req, res, route, token, headers, path: upstreamPath(route, path, query), clientIp: ip });
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    let route: Route | undefined;
    try {
      // Origin-form only (RFC 9112 §3.2.1): absolute-form and authority-form (CONNECT) targets are not proxied.
      if (url.charCodeAt(0) !== 47 /* / */)
        throw new Denial('bad_request_target', new InvalidRequest('the request target must be a path'));
      const headers = scanHeaders(req.rawHeaders);
      const host = hostName(headers.host);
      if (path.startsWith(PRM_PREFIX) && (req.method === 'GET' || req.method === 'HEAD')) {
        const doc = metadata.find(url, host);
        if (doc !== undefined) {
          res.writeHead(200, {
            'content-type': 'application/json',
            'cache-control': 'public, max-age=300',
            'access-control-allow-origin': '*',
            'content-length': Buffer.byteLength(doc),
          });
          res.end(doc);
          return;
        }
      }
      if (!isNormalPath(path))
        throw new Denial('bad_path', new InvalidRequest('the request path must be in normal form'));
      route = table.match(host, path);
      if (!route) throw new Denial('no_route', new OAuthError('not_found', 404, 'no API is served at this path'));
      if (req.method === 'TRACE' || req.method === 'CONNECT')
        throw new Denial(
          'method_not_allowed',
          new OAuthError('invalid_request', 405, `${req.method} is not allowed through the gateway`),
        );
      if (query !== '' && hasTokenInQuery(query))
        throw new Denial(
          'token_in_query',
          new InvalidResourceRequest(
            'access tokens are accepted only in the Authorization header, never in the URL',
            route.challenge,
          ),
        );
      const cred = readCredentials(headers.authorization, headers.dpop, route.challenge);
      const token = verifier.verify(cred.token, route.challenge);
      const now = ctx.clock.nowMs();
      const method = req.method ?? 'GET';
      // Fail closed when this node cannot be sure its revocation set is current (the bus has been down longer than
      // revocation.max_feed_lag): a revoked token must not slip through while the node is deaf.
      if (!ctx.revocations.healthy(now))
        throw new Denial(
          'revocation_feed_down',
          new OAuthError('temporarily_unavailable', 503, 'the gateway cannot confirm revocations right now'),
          tokenFacts(token),
        );
      const dpop = authorizeRequest(
        ctx,
        route,
        token,
        cred,
        { method, url: `${publicOrigin ?? `http://${headers.host ?? ''}`}${path}` },
        now,
        skew,
      );
      const r = route;
      const limitThenPass = (): void => {
        const rule = r.rateRule;
        if (!rule) {
          pass(req, res, r, token, headers, path, query, now);
          return;
        }
        ctx.limiter.hit(token.clientId, rule).then(
          async (result) => {
            if (result.allowed) return pass(req, res, r, token, headers, path, query, now);
            const meta = { requestId: randomId(), ip: clientIp(req), userAgent: undefined };
            await noteRefusal(ctx, rule, 'client', meta, result, token.clientId).catch((err) =>
              ctx.log.error({ err }, 'rate_limit.hit event not written'),
            );
            sendDenial(
              req,
              res,
              new Denial('rate_limited', new RateLimited(result.retryAfter), tokenFacts(token)),
              r,
              path,
            );
          },
          (err) => {
            ctx.log.error({ err }, 'gateway rate limiter failed');
            sendDenial(req, res, new Denial('rate_limited', new RateLimited(1), tokenFacts(token)), r, path);
          },
        );
      };
      if (!dpop) {
        limitThenPass();
        return;
      }
      // RFC 9449 §7.1: the proof is checked after the cheap checks, asynchronously (its jti is recorded).
      checkDpop(ctx, dpop).then(limitThenPass, (e: unknown) => {
        if (e instanceof Denial) return sendDenial(req, res, e, r, path);
        ctx.log.error({ err: e }, 'gateway DPoP check failed');
        sendDenial(req, res, new Denial('dpop_invalid', new ServerError(), tokenFacts(token)), r, path);
      });
    } catch (e) {
      if (e instanceof Denial) {
        sendDenial(req, res, e, route, path);
        return;
      }
      ctx.log.error({ err: e }, 'gateway request failed');
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end('{"error":"server_error","error_description":"the gateway could not handle the request"}');
      }
    }
  };

  const server = createServer(
    {
      // Slowloris bounds: headers within 20 s, idle keep-alive connections closed after 5 s.
      headersTimeout: 20_000,
      keepAliveTimeout: 5_000,
      maxHeaderSize: 16_384,
    },
    handle,
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(g.listen.port, g.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = g.listen.host.includes(':') ? `[${g.listen.host}]` : g.listen.host;
  const url = `http://${host}:${addr.port}`;

  const flush = async () => {
    const events = usage.drain(ctx.clock.nowMs());
    if (events.length) await Promise.all(events.map((e) => ctx.events.write(e)));
  };
  const timer = setInterval(() => {
    flush().catch((err) => ctx.log.error({ err }, 'gateway.usage events not written'));
    verifier.purgeExpired(ctx.clock.nowMs() / 1000);
  }, g.usage_flush_ms);
  timer.unref();

  let closing: Promise<void> | undefined;
  return {
    url,
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
        await forwarder.close();
        await flush();
      })();
      return closing;
    },
  };
}
