import {
  InvalidDpopProof,
  InvalidGrant,
  type ResourceChallenge,
  ResourceDpopError,
  UseDpopNonce,
} from '../errors/oauth-error.ts';
import { verifyDpopProof } from '../oauth/dpop.ts';
import type { GatewayContext } from './context.ts';
import { Denial, type DeniedTokenFacts } from './denial.ts';

export interface DpopCheck {
  /** The DPoP header (RFC 9449 §4.1), if sent. */
  proof: string | undefined;
  method: string;
  /** RFC 9449 §4.3 htu: the request URI without query and fragment. */
  url: string;
  accessToken: string;
  /** The token's cnf.jkt (RFC 9449 §6.1); undefined when the token is not DPoP-bound. */
  expectedJkt: string | undefined;
  challenge: ResourceChallenge;
  token: DeniedTokenFacts;
}

/**
 * The one place the gateway checks a DPoP proof (RFC 9449 §4.3 and §7.1: typ, alg, jwk, htm, htu, iat, jti replay,
 * ath, and the key matching cnf.jkt), with the same verifier the token endpoint uses (src/oauth/dpop.ts). Called
 * for every request presented with the DPoP scheme. A DPoP-scheme request with a token that is not DPoP-bound is
 * refused (§7.1: the scheme promises a bound token). Failures become 401 with a DPoP challenge.
 */
export async function checkDpop(ctx: GatewayContext, input: DpopCheck): Promise<{ jkt: string }> {
  if (input.expectedJkt === undefined)
    throw new Denial(
      'dpop_invalid',
      new ResourceDpopError('invalid_dpop_proof', 'the access token is not DPoP-bound', input.challenge),
      input.token,
    );
  try {
    const v = await verifyDpopProof(ctx, {
      proof: input.proof,
      method: input.method,
      url: input.url,
      accessToken: input.accessToken,
      expectedJkt: input.expectedJkt,
      requireNonce: ctx.config.dpop.require_nonce,
    });
    return { jkt: v.jkt };
  } catch (e) {
    if (e instanceof UseDpopNonce)
      throw new Denial(
        'dpop_invalid',
        new ResourceDpopError('use_dpop_nonce', e.description, input.challenge, e.nonce),
        input.token,
      );
    if (e instanceof InvalidDpopProof || e instanceof InvalidGrant)
      throw new Denial(
        'dpop_invalid',
        new ResourceDpopError('invalid_dpop_proof', e.description, input.challenge),
        input.token,
      );
    throw e;
  }
}
