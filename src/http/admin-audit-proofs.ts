import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ProofError, proveConsistency, proveInclusion } from '../audit/proofs.ts';
import { InvalidRequest, OAuthError } from '../errors/oauth-error.ts';
import type { OAuthContext } from '../oauth/context.ts';
import { requireAdmin, sendAdmin } from './admin.ts';

/** A non-negative integer query parameter; absent -> undefined unless required. */
function intParam(req: FastifyRequest, name: string, required: boolean): number | undefined {
  const v = (req.query as Record<string, unknown>)[name];
  if (v === undefined || v === '') {
    if (required) throw new InvalidRequest(`the ${name} parameter is required`);
    return undefined;
  }
  if (typeof v !== 'string' || !/^(0|[1-9][0-9]{0,15})$/.test(v) || !Number.isSafeInteger(Number(v)))
    throw new InvalidRequest(`the ${name} parameter must be a non-negative integer`);
  return Number(v);
}

function toOAuth(e: unknown): never {
  if (e instanceof ProofError)
    throw e.status === 400 ? new InvalidRequest(e.message) : new OAuthError('not_found', 404, e.message);
  throw e;
}

/**
 * Audit log proofs for auditors (docs/audit.md "Proofs"): the same JSON as `portcullis audit proof`, verifiable with
 * tools/verify-audit-proof.mjs. Each reads the stored leaf hashes up to the checkpoint's tree size (O(n)).
 */
export function registerAuditProofRoutes(app: FastifyInstance, ctx: OAuthContext): void {
  app.get('/admin/audit/proofs/inclusion', async (req, reply) => {
    await requireAdmin(ctx, req, 'audit:read');
    const eventId = intParam(req, 'event_id', true) as number;
    const treeSize = intParam(req, 'tree_size', false);
    return sendAdmin(reply, await proveInclusion(ctx.storage.audit, eventId, treeSize).catch(toOAuth));
  });
  app.get('/admin/audit/proofs/consistency', async (req, reply) => {
    await requireAdmin(ctx, req, 'audit:read');
    const from = intParam(req, 'from', true) as number;
    const to = intParam(req, 'to', true) as number;
    return sendAdmin(reply, await proveConsistency(ctx.storage.audit, from, to).catch(toOAuth));
  });
}
