import { OAuthError } from '../../errors/oauth-error.ts';
import type { RevocationRecord } from '../../storage/ports.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';

/** Most records in one answer; `more: true` says ask again at once. */
export const FEED_PAGE = 1000;
/** Longest wait a reader may ask for (seconds): below common proxy idle timeouts. */
export const FEED_MAX_WAIT = 25;

export interface RevocationFeedResponse {
  /** Revocations with id > after, oldest first. */
  revocations: RevocationRecord[];
  /** The id to send as `after` next time. */
  last_id: number;
  /** More records are waiting: ask again without wait. */
  more: boolean;
  /** The signing keys currently published (the reader needs no separate JWKS poll). */
  jwks: { keys: Record<string, unknown>[] };
}

/**
 * The remote revocation feed for gateways that run apart from the authorization server (`--role gateway`): the
 * revocations table after an id, long-polled. The reader authenticates as a client (any method /token accepts)
 * and must be listed in revocation.feed_clients. While this node's own bus has been down longer than
 * revocation.max_feed_lag it answers 503 temporarily_unavailable: it may be missing revocations itself, and the
 * reader must count its feed as down (and fail closed past its own bound) rather than trust it.
 */
export async function revocationFeedEndpoint(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
): Promise<RevocationFeedResponse> {
  const { client } = await authenticateClient(ctx, input, meta, { allowPublic: false });
  if (!ctx.config.revocation.feed_clients.includes(client.client_id))
    throw new OAuthError('unauthorized_client', 403, 'this client may not read the revocation feed');
  const after = parseIntParam(input.params.after, 0, Number.MAX_SAFE_INTEGER, 'after');
  const wait = parseIntParam(input.params.wait, 0, FEED_MAX_WAIT, 'wait');
  const read = async () => {
    await ctx.refresh({ force: true });
    if (!ctx.revocations.healthy(ctx.clock.nowMs()))
      throw new OAuthError('temporarily_unavailable', 503, 'the revocation feed of this node is down');
    return ctx.storage.revocations.listAfter(after, FEED_PAGE);
  };
  let rows = await read();
  if (rows.length === 0 && wait > 0) {
    const jwksBefore = JSON.stringify(ctx.keys.jwks());
    const deadline = Date.now() + wait * 1000;
    // Wake on any change this node hears of (its bus, its own commits), and re-read at least every second (the
    // bus may be down and the table polled instead); answer early when the keys changed.
    while (rows.length === 0 && Date.now() < deadline) {
      await ctx.revocations.changed(Math.min(1000, deadline - Date.now()));
      rows = await read();
      if (JSON.stringify(ctx.keys.jwks()) !== jwksBefore) break;
    }
  }
  return {
    revocations: rows,
    last_id: rows.at(-1)?.id ?? after,
    more: rows.length === FEED_PAGE,
    jwks: ctx.keys.jwks(),
  };
}

function parseIntParam(v: string | undefined, min: number, max: number, name: string): number {
  if (v === undefined || v === '') return min;
  if (!/^\d{1,16}$/.test(v)) throw new OAuthError('invalid_request', 400, `${name} must be a whole number`);
  return Math.min(max, Math.max(min, Number(v)));
}
