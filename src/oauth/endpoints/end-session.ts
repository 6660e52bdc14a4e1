import { endSession, type LoadedSession } from '../../identity/sessions.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import { withQuery } from '../authorization/redirect-uri.ts';
import type { OAuthContext, RequestMeta } from '../context.ts';
import { verifyIdTokenHint } from '../tokens/id-token-hint.ts';

export type EndSessionOutcome =
  | { kind: 'error_page'; status: number; error: string; description: string }
  /** Ask the user to confirm (no valid id_token_hint for this session): a forged link must not sign anyone out. */
  | { kind: 'confirm'; client: ClientRecord | undefined; params: Record<string, string> }
  /** Signed out (or there was nothing to end): go to location, or show the signed-out page. */
  | { kind: 'done'; location: string | undefined; client: ClientRecord | undefined };

/**
 * OpenID Connect RP-Initiated Logout 1.0 §2-§3: identify the client (id_token_hint's aud, or client_id), accept a
 * post_logout_redirect_uri only when it exactly matches one the client registered, and end the session server-side.
 * Without a valid id_token_hint for the current user, the user confirms with a CSRF-protected POST.
 */
export async function endSessionEndpoint(
  ctx: OAuthContext,
  input: { params: Record<string, string>; repeated: string[]; session: LoadedSession | undefined; confirmed: boolean },
  meta: RequestMeta,
): Promise<EndSessionOutcome> {
  const p = input.params;
  const page = (description: string): EndSessionOutcome => ({
    kind: 'error_page',
    status: 400,
    error: 'invalid_request',
    description,
  });
  if (input.repeated.length) return page(`parameter ${input.repeated[0]!.slice(0, 40)} is repeated`);
  const hint = p.id_token_hint !== undefined ? verifyIdTokenHint(ctx, p.id_token_hint) : undefined;
  if (p.id_token_hint !== undefined && !hint) return page('id_token_hint is not an ID token issued by this server');
  let clientId = p.client_id;
  if (hint) {
    if (clientId !== undefined && !hint.aud.includes(clientId))
      return page('client_id is not an audience of the id_token_hint');
    if (clientId === undefined) {
      if (hint.aud.length !== 1) return page('client_id is required with this id_token_hint');
      clientId = hint.aud[0];
    }
  }
  let client: ClientRecord | undefined;
  if (clientId !== undefined) {
    client = await ctx.clients.get(clientId);
    if (!client || client.disabled) return page('the client is unknown');
  }
  let location: string | undefined;
  if (p.post_logout_redirect_uri !== undefined) {
    if (!client) return page('post_logout_redirect_uri needs id_token_hint or client_id');
    // Exact string match, like redirect_uri (RP-Initiated Logout §3: "MUST have been previously registered").
    if (!client.post_logout_redirect_uris.includes(p.post_logout_redirect_uri))
      return page('post_logout_redirect_uri is not registered for this client');
    location = withQuery(p.post_logout_redirect_uri, { state: p.state });
  }
  const s = input.session;
  if (!s?.user) return { kind: 'done', location, client };
  const hintMatches = !!hint && hint.sub === s.user.id && (hint.sid === undefined || hint.sid === s.sid);
  if (!input.confirmed && !hintMatches) {
    const keep: Record<string, string> = {};
    for (const k of ['id_token_hint', 'client_id', 'post_logout_redirect_uri', 'state'])
      if (p[k] !== undefined) keep[k] = p[k]!;
    return { kind: 'confirm', client, params: keep };
  }
  await endSession(ctx, s.record, hint ? 'rp_logout' : 'logout', meta);
  return { kind: 'done', location, client };
}
