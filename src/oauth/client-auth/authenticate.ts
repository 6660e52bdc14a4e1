import { InvalidClient, InvalidRequest, type OAuthError } from '../../errors/oauth-error.ts';
import type { ClientRecord } from '../../storage/ports.ts';
import { eventBase, type OAuthContext, type RequestMeta } from '../context.ts';
import { parseBasic, verifyClientSecret } from './client-secret.ts';
import { JWT_BEARER_ASSERTION, verifyClientAssertion } from './private-key-jwt.ts';

export interface ClientAuthInput {
  authorization?: string | undefined;
  params: Readonly<Record<string, string>>;
  /** Token endpoint only: the request's DPoP header(s) (RFC 9449 §4) with the method and URL the proof must name. */
  dpop?: DpopRequest | undefined;
}

/** A DPoP header as received, with what its htm and htu must be (the HTTP layer knows the public URL). */
export interface DpopRequest {
  proof: string | string[];
  method: string;
  url: string;
}

export interface AuthenticatedClient {
  client: ClientRecord;
  method: 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt' | 'none';
}

/** Which method the request used, per RFC 6749 §2.3 (exactly one) and RFC 7521 §4.2. */
function detectMethod(input: ClientAuthInput): {
  method: AuthenticatedClient['method'];
  clientId: string | undefined;
  secret?: string;
} {
  const p = input.params;
  const used: AuthenticatedClient['method'][] = [];
  let basic: { clientId: string; secret: string } | undefined;
  if (input.authorization !== undefined && /^basic\b/i.test(input.authorization)) {
    basic = parseBasic(input.authorization);
    if (!basic) throw new InvalidClient('malformed HTTP Basic credentials', true);
    used.push('client_secret_basic');
  }
  if (p.client_secret !== undefined) used.push('client_secret_post');
  if (p.client_assertion !== undefined || p.client_assertion_type !== undefined) used.push('private_key_jwt');
  if (used.length > 1) throw new InvalidRequest('use exactly one client authentication method (RFC 6749 §2.3)');
  if (basic) {
    if (p.client_id !== undefined && p.client_id !== basic.clientId)
      throw new InvalidRequest('client_id does not match the Basic credentials');
    return { method: 'client_secret_basic', clientId: basic.clientId, secret: basic.secret };
  }
  if (used[0] === 'client_secret_post')
    return { method: 'client_secret_post', clientId: p.client_id, secret: p.client_secret };
  if (used[0] === 'private_key_jwt') return { method: 'private_key_jwt', clientId: p.client_id };
  return { method: 'none', clientId: p.client_id };
}

function assertionSubject(assertion: string): string | undefined {
  try {
    const part = assertion.split('.')[1];
    if (!part) return undefined;
    const claims = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof claims.sub === 'string' ? claims.sub : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Authenticates the client of a token, introspection or revocation request. Every failure is invalid_client
 * (401; with WWW-Authenticate when Basic was tried) and writes client_auth.failed.
 */
export async function authenticateClient(
  ctx: OAuthContext,
  input: ClientAuthInput,
  meta: RequestMeta,
  opts: { allowPublic: boolean },
): Promise<AuthenticatedClient> {
  const detected = detectMethod(input);
  const usedBasic = detected.method === 'client_secret_basic';
  let clientId = detected.clientId;
  const fail = async (reason: string, err?: OAuthError): Promise<never> => {
    await ctx.events.write({
      ...eventBase(ctx, meta),
      type: 'client_auth.failed',
      client_id: clientId ?? null,
      data: { method: detected.method, reason, ip: meta.ip },
    });
    throw (
      err ??
      new InvalidClient(
        reason === 'unknown client' || reason === 'wrong secret' ? 'client authentication failed' : reason,
        usedBasic,
      )
    );
  };
  if (detected.method === 'private_key_jwt') {
    const p = input.params;
    if (p.client_assertion_type !== JWT_BEARER_ASSERTION)
      return fail(`client_assertion_type must be ${JWT_BEARER_ASSERTION}`);
    if (!p.client_assertion) return fail('client_assertion is missing');
    const sub = assertionSubject(p.client_assertion);
    if (clientId === undefined) clientId = sub;
    else if (sub !== undefined && sub !== clientId) return fail('client_assertion sub does not match client_id');
  }
  if (!clientId) {
    throw new InvalidClient('client authentication is required', usedBasic);
  }
  const client = await ctx.clients.get(clientId);
  // The same answer for an unknown client and a wrong secret: no client enumeration.
  if (!client || client.disabled) return fail('unknown client');
  if (client.token_endpoint_auth_method !== detected.method) {
    if (detected.method === 'none') return fail('client authentication is required');
    return fail(`client is registered for ${client.token_endpoint_auth_method}, not ${detected.method}`);
  }
  switch (detected.method) {
    case 'client_secret_basic':
    case 'client_secret_post':
      if (!verifyClientSecret(client, detected.secret ?? '')) return fail('wrong secret');
      break;
    case 'private_key_jwt':
      try {
        await verifyClientAssertion(ctx, client, input.params.client_assertion ?? '');
      } catch (e) {
        if (e instanceof InvalidClient) return fail(e.description, e);
        throw e;
      }
      break;
    case 'none':
      if (!opts.allowPublic) return fail('this endpoint requires client authentication');
      break;
  }
  return { client, method: detected.method };
}
