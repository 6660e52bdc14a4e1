import { createHash } from 'node:crypto';
import { InvalidGrant, InvalidRequest } from '../../errors/oauth-error.ts';
import { constantTimeEqual, sha256Hex } from '../../lib/crypto.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import type { GrantDpop, TokenResponse } from './client-credentials.ts';
import { buildUserTokens, refreshAllowed, revokeOnReplay } from './user-tokens.ts';

const REPLAY = { type: 'authorization_code.replayed', reason: 'authorization_code_replayed' } as const;

/** RFC 7636 §4.1: 43–128 unreserved characters. */
const VERIFIER = /^[A-Za-z0-9._~-]{43,128}$/;

/**
 * RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6) and OAuth 2.1 §4.1.3. In order:
 * 1. the code must exist and belong to this client, the redirect_uri must be the one of the authorization request,
 *    and the code_verifier must match the challenge. A failure here is invalid_grant and changes nothing: a
 *    guessed or stolen code presented without its verifier, or by another client, cannot burn the user's grant.
 * 2. the code is consumed atomically in the same transaction that records the tokens: of two concurrent
 *    redemptions exactly one wins.
 * 3. a code that was already redeemed (a replay, RFC 6749 §4.1.2, RFC 9700 §4.2.4) is refused and everything
 *    issued from it is revoked: the grant, its refresh tokens and, through the grant revocation, its access tokens.
 */
export async function authorizationCodeGrant(
  ctx: OAuthContext,
  client: ClientRecord,
  params: Readonly<Record<string, string>>,
  meta: RequestMeta,
  dpop?: GrantDpop,
): Promise<TokenResponse> {
  const value = params.code;
  if (!value) throw new InvalidRequest('code is required');
  const verifier = params.code_verifier;
  if (!verifier) throw new InvalidRequest('code_verifier is required (PKCE, RFC 7636)');
  if (!VERIFIER.test(verifier)) throw new InvalidRequest('code_verifier must be 43-128 unreserved characters');
  const codeHash = sha256Hex(value);

  const code = await ctx.storage.codes.get(codeHash);
  if (!code) throw new InvalidGrant('the authorization code is invalid');
  if (code.client_id !== client.client_id)
    throw new InvalidGrant('the authorization code was issued to another client');
  // RFC 6749 §4.1.3: redirect_uri must be identical to the one in the authorization request.
  if (params.redirect_uri !== undefined ? params.redirect_uri !== code.redirect_uri : client.redirect_uris.length !== 1)
    throw new InvalidGrant('redirect_uri does not match the authorization request');
  const challenge = createHash('sha256').update(verifier, 'ascii').digest('base64url');
  if (!constantTimeEqual(challenge, code.code_challenge))
    throw new InvalidGrant('code_verifier does not match the code_challenge');
  // RFC 9449 §10.1: a code bound by dpop_jkt is redeemed only with a proof made with that key. Like the checks
  // above, a failure changes nothing: whoever holds a stolen code (even with its verifier) but not the key cannot
  // burn the user's grant with it.
  if (code.dpop_jkt !== null) {
    if (dpop === undefined)
      throw new InvalidGrant(
        'the authorization code is bound to a DPoP key (dpop_jkt): send a DPoP proof made with it',
      );
    if (!constantTimeEqual(dpop.jkt, code.dpop_jkt))
      throw new InvalidGrant('the DPoP proof was made with another key than the dpop_jkt of the authorization request');
  }

  const now = ctx.clock.nowMs();
  if (code.redeemed_at !== null) return revokeOnReplay(ctx, code.grant_id, meta, REPLAY);
  if (code.expires_at <= now) throw new InvalidGrant('the authorization code has expired');
  const grant = await ctx.storage.grants.get(code.grant_id);
  if (!grant || grant.revoked_at !== null) throw new InvalidGrant('the grant behind this code was revoked');
  const user = await ctx.storage.users.getById(grant.user_id);
  if (!user || user.disabled) throw new InvalidGrant('the user is disabled');

  const scopes = grant.scope.split(' ').filter(Boolean);
  const tokens = await buildUserTokens(
    ctx,
    {
      client,
      grant,
      grantType: 'authorization_code',
      scopes,
      resource: params.resource,
      jkt: dpop?.jkt,
      nonce: code.nonce,
      refresh: refreshAllowed(client, scopes)
        ? { absoluteExpiresAt: grant.created_at + ctx.config.tokens.refresh_token_absolute_ttl * 1000 }
        : undefined,
    },
    meta,
  );
  const outcome = await ctx.storage.withTransaction(async (tx) => {
    const r = await tx.codes.consume(codeHash, ctx.clock.nowMs());
    if (r.status === 'replayed') return 'replayed' as const;
    if (r.status !== 'ok') return r.status;
    if (tokens.refresh) await tx.refreshTokens.insert(tokens.refresh);
    await tx.events.append({
      type: 'authorization_code.redeemed',
      at: ctx.clock.nowMs(),
      ...correlation(meta),
      session_id: grant.session_id,
      client_id: client.client_id,
      subject: grant.user_id,
      grant_id: grant.id,
      data: { refresh_token: tokens.refresh !== undefined, id_token: tokens.response.id_token !== undefined },
    });
    for (const e of tokens.events) await tx.events.append(e);
    return 'ok' as const;
  });
  if (outcome === 'replayed') return revokeOnReplay(ctx, code.grant_id, meta, REPLAY);
  if (outcome !== 'ok') throw new InvalidGrant('the authorization code has expired');
  return tokens.response;
}
