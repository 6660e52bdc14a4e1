import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { verifierKey } from '../audit/note.ts';
import { InsufficientScope, InvalidToken, OAuthError } from '../errors/oauth-error.ts';
import type { OAuthContext } from '../oauth/context.ts';
import { isRevoked, type VerifiedAccessToken, verifyOwnAccessToken } from '../oauth/tokens/access-token.ts';
import { registerAuditProofRoutes } from './admin-audit-proofs.ts';
import { registerAdminTimeline } from './admin-audit-timeline.ts';

/** Scopes of the admin API (they must be scopes of the resource named by admin.resource to be grantable). */
export type AdminScope = 'audit:read';

/**
 * The admin API's guard: the admin API is a protected resource of Portcullis itself. A request needs
 * `Authorization: Bearer <access token>` issued by this server, unexpired, unrevoked, not DPoP-bound (bearer use
 * only), whose audience includes `admin.resource` and whose scope includes the route's scope. With admin.resource
 * unset every admin route answers 404. RFC 6750 errors (401 invalid_token, 403 insufficient_scope).
 */
export async function requireAdmin(
  ctx: OAuthContext,
  req: FastifyRequest,
  scope: AdminScope,
): Promise<VerifiedAccessToken> {
  const resource = ctx.config.admin.resource;
  if (resource === undefined)
    throw new OAuthError('not_found', 404, 'the admin API is off: set admin.resource in the configuration');
  const h = req.headers.authorization;
  if (h === undefined) throw new InvalidToken('an access token is required', true);
  const m = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(h);
  if (!m?.[1]) throw new InvalidToken('use the Bearer authorization scheme with an access token');
  await ctx.refresh({ force: true });
  const v = verifyOwnAccessToken(ctx, m[1]);
  if (!v) throw new InvalidToken('the access token is not valid');
  const c = v.claims;
  if (c.exp <= Math.floor(ctx.clock.nowMs() / 1000)) throw new InvalidToken('the access token has expired');
  if (isRevoked(ctx, v)) throw new InvalidToken('the access token was revoked');
  if (c.cnf !== undefined)
    throw new InvalidToken('the access token is DPoP-bound; the admin API takes bearer tokens only');
  const auds = Array.isArray(c.aud) ? c.aud : [c.aud];
  if (!auds.includes(resource)) throw new InvalidToken('the access token is not meant for the admin API');
  if (!(c.scope ?? '').split(' ').includes(scope))
    throw new InsufficientScope(`the admin API route needs the ${scope} scope`, scope);
  return v;
}

const noStore = { 'cache-control': 'no-store' };

/** Sends an admin API answer (JSON, never cached). */
export function sendAdmin(reply: FastifyReply, body: unknown): FastifyReply {
  return reply.headers(noStore).send(body);
}

/**
 * Admin routes that belong to no other module. Others (audit proofs, timelines) register themselves with
 * requireAdmin as their guard. Reference: docs/admin-api.md.
 */
export function registerAdminApi(app: FastifyInstance, ctx: OAuthContext): void {
  registerAdminTimeline(app, ctx);
  // The newest signed checkpoint and the keys that verify it: what an auditor pins and compares with the sinks.
  app.get('/admin/audit/checkpoint', async (req, reply) => {
    await requireAdmin(ctx, req, 'audit:read');
    const cp = await ctx.storage.audit.latestCheckpoint();
    const keys = await ctx.storage.audit.keys();
    return sendAdmin(reply, {
      checkpoint: cp ?? null,
      verifier_keys: keys.map((k) => ({
        key_id: k.key_id,
        verifier_key: verifierKey(k.name, Buffer.from(k.public_key, 'base64')),
        retired_at: k.retired_at,
      })),
    });
  });
  registerAuditProofRoutes(app, ctx);
}
