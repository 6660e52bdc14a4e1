import { InvalidToken, type ResourceChallenge } from '../errors/oauth-error.ts';
import type { OAuthContext } from '../oauth/context.ts';
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
 * ath, and the key matching cnf.jkt). It is called for every request presented with the DPoP scheme.
 *
 * PENDING: proof verification (verifyDpopProof in src/oauth/dpop.ts) is being written on another branch and is not
 * on this one. Until it lands here, every DPoP-scheme request is refused: the gateway never accepts a proof it
 * has not checked. Routes with `dpop: required` therefore refuse every request for now (Bearer ones with
 * dpop_required, DPoP ones here).
 */
export function checkDpop(_ctx: OAuthContext, input: DpopCheck): { jkt: string } {
  throw new Denial(
    'dpop_unavailable',
    new InvalidToken('DPoP support pending: DPoP proofs cannot be checked yet', false, input.challenge),
    input.token,
  );
}
