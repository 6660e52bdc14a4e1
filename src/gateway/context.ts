import type { OAuthContext } from '../oauth/context.ts';

/** The issuer's verification keys as the gateway sees them: a kid verifies a token iff it is published. */
export interface GatewayKeys {
  /** The published public JWK with this kid (with its alg), or undefined. */
  publicJwk(kid: string): Record<string, unknown> | undefined;
  /** Whether tokens signed by this kid may still be accepted (published and never revoked). */
  isTrustedKid(kid: string): boolean;
}

/**
 * What the gateway needs: an OAuthContext fits (the gateway inside `portcullis start`), and so does the context a
 * gateway running alone builds (src/gateway/remote-context.ts), whose keys come from the authorization server's
 * revocation feed and which has no signing keys, clients or KEK of the authorization server. `kek` there only
 * derives the DPoP nonce key (src/oauth/dpop.ts).
 */
export type GatewayContext = Pick<
  OAuthContext,
  'config' | 'clock' | 'storage' | 'kek' | 'revocations' | 'events' | 'limiter' | 'log' | 'metrics' | 'dpopReplay'
> & { keys: GatewayKeys };
