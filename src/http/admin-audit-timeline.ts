import type { FastifyInstance } from 'fastify';
import {
  buildTimeline,
  selectorProblem,
  TIMELINE_DEFAULT_LIMIT,
  TIMELINE_MAX_LIMIT,
  TIMELINE_SELECTORS,
  type TimelineSelectorKind,
} from '../audit/timeline.ts';
import { InvalidRequest } from '../errors/oauth-error.ts';
import type { OAuthContext } from '../oauth/context.ts';
import { requireAdmin, sendAdmin } from './admin.ts';

/**
 * GET /admin/audit/timeline?grant=…|jti=…|client=…|subject=…|ip=…[&limit=…]: the story of a token, grant, client,
 * subject or address (src/audit/timeline.ts), as JSON. Exactly one selector; a bad or missing one is 400
 * invalid_request naming the parameter.
 */
export function registerAdminTimeline(app: FastifyInstance, ctx: OAuthContext): void {
  app.get('/admin/audit/timeline', async (req, reply) => {
    await requireAdmin(ctx, req, 'audit:read');
    const q = (req.query ?? {}) as Record<string, string | string[] | undefined>;
    const given = TIMELINE_SELECTORS.filter((k) => q[k] !== undefined);
    if (given.length === 0)
      throw new InvalidRequest(`one selector is required: ${TIMELINE_SELECTORS.join(', ')} (query parameters)`);
    if (given.length > 1) throw new InvalidRequest(`give only one selector, not ${given.join(' and ')}`);
    const by = given[0] as TimelineSelectorKind;
    const raw = q[by];
    if (Array.isArray(raw)) throw new InvalidRequest(`${by} must not be repeated`);
    const problem = selectorProblem(by, raw);
    if (problem) throw new InvalidRequest(problem);
    let limit = TIMELINE_DEFAULT_LIMIT;
    if (q.limit !== undefined) {
      const l = Array.isArray(q.limit) ? undefined : q.limit;
      if (l === undefined || !/^\d{1,6}$/.test(l) || Number(l) < 1 || Number(l) > TIMELINE_MAX_LIMIT)
        throw new InvalidRequest(`limit must be an integer from 1 to ${TIMELINE_MAX_LIMIT}`);
      limit = Number(l);
    }
    const t = await buildTimeline(ctx.storage.auditExport, { by, value: raw as string }, limit);
    return sendAdmin(reply, t);
  });
}
