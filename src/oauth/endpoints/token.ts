import {
  InvalidDpopProof,
  InvalidRequest,
  OAuthError,
  UnauthorizedClient,
  UnsupportedGrantType,
} from '../../errors/oauth-error.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import { eventBase, type OAuthContext, type RequestMeta } from '../context.ts';
import { DEVICE_CODE_GRANT } from '../device/common.ts';
import { verifyDpopProof } from '../dpop.ts';
import { authorizationCodeGrant } from '../grants/authorization-code.ts';
import { clientCredentialsGrant, type GrantDpop, type TokenResponse } from '../grants/client-credentials.ts';
import { deviceCodeGrant } from '../grants/device-code.ts';
import { refreshTokenGrant } from '../grants/refresh-token.ts';

type GrantHandler = typeof clientCredentialsGrant;

/** Grants this server implements. password and implicit are absent by design (OAuth 2.1). */
export const GRANT_HANDLERS: Readonly<Record<string, GrantHandler>> = {
  client_credentials: clientCredentialsGrant,
  authorization_code: authorizationCodeGrant,
  refresh_token: refreshTokenGrant,
  [DEVICE_CODE_GRANT]: deviceCodeGrant,
};

/**
 * Answers that are part of normal polling (RFC 8628 §3.5), not failures: a device asks every few seconds until the
 * user decides, so recording each would flood the event log. slow_down (a misbehaving client) is still recorded.
 */
const NOT_A_FAILURE = new Set(['authorization_pending', 'use_dpop_nonce']);

/**
 * RFC 9449 §5: checks the request's DPoP proof (htm POST, htu this endpoint's URL, no ath: no access token is
 * presented here). A client registered with dpop_bound_access_tokens must send one (§5.2).
 */
async function tokenRequestDpop(
  ctx: OAuthContext,
  client: { client_id: string; metadata: Record<string, unknown> },
  input: ClientAuthInput,
): Promise<GrantDpop | undefined> {
  if (input.dpop === undefined) {
    if (client.metadata.dpop_bound_access_tokens === true)
      throw new InvalidDpopProof('this client must send a DPoP proof (dpop_bound_access_tokens)');
    return undefined;
  }
  const { jkt } = await verifyDpopProof(ctx, {
    proof: input.dpop.proof,
    method: input.dpop.method,
    url: input.dpop.url,
    requireNonce: ctx.config.dpop.require_nonce,
  });
  return { jkt };
}

/** RFC 6749 §3.2 token endpoint: authenticate the client, check the grant, run its handler. */
export async function tokenEndpoint(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
): Promise<TokenResponse> {
  const grantType = input.params.grant_type;
  let clientId = 'unknown';
  try {
    if (!grantType) throw new InvalidRequest('grant_type is required');
    const handler = Object.hasOwn(GRANT_HANDLERS, grantType) ? GRANT_HANDLERS[grantType] : undefined;
    if (!handler) throw new UnsupportedGrantType(`grant_type ${grantType.slice(0, 100)} is not supported`);
    const { client } = await authenticateClient(ctx, input, meta, { allowPublic: grantType !== 'client_credentials' });
    clientId = client.client_id;
    if (!client.grant_types.includes(grantType))
      throw new UnauthorizedClient(`this client may not use grant_type ${grantType}`);
    // No DPoP header and no DPoP policy: nothing more to do (the client_credentials hot path stays as it was).
    const dpop =
      input.dpop === undefined && client.metadata.dpop_bound_access_tokens !== true
        ? undefined
        : await tokenRequestDpop(ctx, client, input);
    const res = await handler(ctx, client, input.params, meta, dpop);
    ctx.metrics.tokenIssued(clientId, grantType);
    return res;
  } catch (e) {
    if (e instanceof OAuthError) {
      if (NOT_A_FAILURE.has(e.code)) throw e;
      ctx.metrics.tokenFailed(
        clientId,
        grantType && Object.hasOwn(GRANT_HANDLERS, grantType) ? grantType : 'other',
        e.code,
      );
      if (clientId !== 'unknown') {
        await ctx.events.write({
          ...eventBase(ctx, meta),
          type: 'token.failed',
          client_id: clientId,
          data: { grant_type: grantType ?? null, error: e.code, description: e.description },
        });
      }
    }
    throw e;
  }
}
