/**
 * oidc-provider 9 configured like the Portcullis benchmark target: one confidential client authenticating with
 * client_secret_basic and allowed only client_credentials; resource indicators enabled so that
 * `grant_type=client_credentials&resource=<RESOURCE>` yields a JWT access token (typ at+jwt) signed with ES256,
 * valid 600 s. Default in-memory adapter (it keeps nothing for JWT-format client_credentials tokens).
 *
 * Env: PORT (default 0 = any free port), HOST (default 127.0.0.1), CLIENT_ID, CLIENT_SECRET, RESOURCE, SCOPE
 * (space separated scopes of the resource). Prints one JSON line with "msg":"listening" and "url" once it accepts
 * connections; SIGTERM/SIGINT close it.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import Provider, { errors } from 'oidc-provider';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0);
const clientId = process.env.CLIENT_ID ?? 'svc';
const clientSecret = process.env.CLIENT_SECRET ?? 'bench-secret-0123456789abcdef';
const resource = process.env.RESOURCE ?? 'https://api.example.com';
const resourceScope = process.env.SCOPE ?? 'orders:read orders:write';
const ttlSeconds = 600;

// Bind first so the issuer can carry the real port when PORT=0.
const server = createServer();
await new Promise<void>((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, host, () => resolve());
});
const addr = server.address();
if (addr === null || typeof addr === 'string') throw new Error('unexpected server address');
const issuer = `http://${host}:${addr.port}`;

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: resourceScope,
    },
  ],
  jwks: { keys: [signingJwk] },
  // The keystore holds only the ES256 key, so the (unused) ID Token default must be ES256 too.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  scopes: resourceScope.split(' '),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx: unknown, indicator: string) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: resourceScope,
          audience: resource,
          accessTokenTTL: ttlSeconds,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  ttl: { ClientCredentials: ttlSeconds },
  // No interactive flows are exercised; static keys keep oidc-provider from warning about generated ones.
  cookies: { keys: ['bench-cookie-key-0123456789abcdef'] },
});

server.on('request', provider.callback());
server.keepAliveTimeout = 60_000;
process.stdout.write(`${JSON.stringify({ msg: 'listening', url: issuer })}\n`);

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
