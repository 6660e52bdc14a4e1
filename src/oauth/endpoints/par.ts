import { InvalidDpopProof, InvalidRequest, type OAuthError } from '../../errors/oauth-error.ts';
import {
  AuthorizationPageError,
  AuthorizationRedirectError,
  externalParams,
  resolveClientAndRedirect,
  storeAuthorizationRequest,
  validateAuthorizationParams,
} from '../authorization/request.ts';
import { authenticateClient, type ClientAuthInput } from '../client-auth/authenticate.ts';
import { correlation, type OAuthContext, type RequestMeta } from '../context.ts';
import { verifyDpopProof } from '../dpop.ts';

/** Parameters that authenticate the client at /par; they are not part of the authorization request. */
const AUTH_PARAMS = ['client_secret', 'client_assertion', 'client_assertion_type'];

/**
 * RFC 9126 §2 pushed authorization request endpoint: authenticate the client, validate the request exactly as
 * /authorize would, store it, and answer a single-use request_uri bound to this client.
 *
 * RFC 9449 §10.1: a DPoP proof sent with the push binds the code to its key, as the dpop_jkt parameter does; when
 * both are sent they must name the same key.
 */
export async function parEndpoint(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
): Promise<{ request_uri: string; expires_in: number }> {
  const { client } = await authenticateClient(ctx, input, meta, { allowPublic: true });
  const params = externalParams(input.params);
  for (const k of AUTH_PARAMS) delete params[k];
  // RFC 9126 §2.1: request_uri must not be pushed.
  if (params.request_uri !== undefined) throw new InvalidRequest('request_uri must not be sent to the PAR endpoint');
  params.client_id = client.client_id;
  try {
    if (input.dpop !== undefined) {
      const { jkt } = await verifyDpopProof(ctx, {
        proof: input.dpop.proof,
        method: input.dpop.method,
        url: input.dpop.url,
        requireNonce: ctx.config.dpop.require_nonce,
      });
      if (params.dpop_jkt !== undefined && params.dpop_jkt !== jkt)
        throw new InvalidDpopProof('dpop_jkt names another key than the DPoP proof (RFC 9449 §10.1)');
      params.dpop_jkt = jkt;
    }
    const { redirectUri } = await resolveClientAndRedirect(ctx, params);
    const req = validateAuthorizationParams(ctx, client, redirectUri, params, { pushed: true });
    const ttl = ctx.config.authorization.par_ttl;
    const { requestUri } = await storeAuthorizationRequest(ctx, 'par', client.client_id, req.params, ttl);
    await ctx.storage.events.append({
      type: 'par.created',
      at: ctx.clock.nowMs(),
      client_id: client.client_id,
      ...correlation(meta),
      data: { expires_in: ttl, scope: req.scopes.join(' ') },
    });
    return { request_uri: requestUri, expires_in: ttl };
  } catch (e) {
    // RFC 9126 §2.3: errors are JSON, as at the token endpoint; nothing is redirected.
    let err: OAuthError | undefined;
    if (e instanceof AuthorizationRedirectError) err = e.oauth;
    else if (e instanceof AuthorizationPageError) err = new InvalidRequest(e.description);
    else if (e instanceof InvalidDpopProof) err = e;
    if (!err) throw e; // also use_dpop_nonce: part of the protocol, not a failure
    await ctx.storage.events.append({
      type: 'authorization.failed',
      at: ctx.clock.nowMs(),
      client_id: client.client_id,
      ...correlation(meta),
      data: { error: err.code, description: err.description, endpoint: 'par' },
    });
    throw err;
  }
}
