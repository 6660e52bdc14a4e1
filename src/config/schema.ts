import { z } from 'zod';
import { parseDuration } from '../lib/duration.ts';

/** A duration in seconds, written as a number of seconds or "90s", "10m", "12h", "30d". */
const duration = (def: string | number) =>
  z
    .union([z.number(), z.string()])
    .default(def)
    .transform((v, ctx) => {
      const s = parseDuration(v);
      if (s === undefined) {
        ctx.addIssue({ code: 'custom', message: `"${v}" is not a duration (use seconds or e.g. 90s, 10m, 12h, 30d)` });
        return z.NEVER;
      }
      return s;
    });

/**
 * A rate rule: at most `limit` events per `window`, refilling evenly (a burst of `limit`, then one every
 * window/limit). 0 turns the rule off.
 */
const rateRule = (limit: number, window: string) =>
  z
    .strictObject({
      limit: z.number().int().min(0).max(1_000_000).default(limit).describe('Events allowed per window (0: no limit).'),
      window: duration(window)
        .refine((v) => v >= 1, { message: 'must be at least 1s' })
        .describe('After a full window without events, a key has its whole burst again.'),
    })
    .prefault({});

/** An http(s) origin exactly as URL serialises it: scheme://host[:port], lower case, no default port, no path. */
function isOrigin(v: string): boolean {
  if (!URL.canParse(v)) return false;
  const u = new URL(v);
  return (u.protocol === 'https:' || u.protocol === 'http:') && u.origin === v;
}

export const SIGNING_ALGORITHMS = ['ES256', 'EdDSA', 'PS256', 'RS256'] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

export const AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'] as const;
export type AuthMethod = (typeof AUTH_METHODS)[number];

/** Grants that exist in Portcullis. password and implicit never exist (OAuth 2.1). */
export const GRANT_TYPES = [
  'client_credentials',
  'authorization_code',
  'refresh_token',
  'urn:ietf:params:oauth:grant-type:device_code',
] as const;

/** Algorithms accepted on DPoP proofs (RFC 9449 §4.3): asymmetric only; none and HMAC are never accepted. */
export const DPOP_ALGORITHMS = [
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
  'PS256',
  'PS384',
  'PS512',
  'RS256',
  'RS384',
  'RS512',
] as const;

/** Algorithms accepted on client assertions (RFC 7523); none and HMAC are never accepted. */
export const ASSERTION_ALGORITHMS = [
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'PS256',
  'PS384',
  'PS512',
  'RS256',
  'RS384',
  'RS512',
] as const;

const scopeToken = /^[\x21\x23-\x5B\x5D-\x7E]+$/; // RFC 6749 §3.3 scope-token

const jwk = z.record(z.string(), z.unknown());

export const resourceSchema = z.strictObject({
  identifier: z
    .url({ message: 'must be an absolute URI (RFC 8707 §2)' })
    .refine((v) => !v.includes('#'), { message: 'must not contain a fragment (RFC 8707 §2)' })
    .describe("Absolute URI of the API; becomes the access token's aud (RFC 8707)."),
  name: z.string().optional().describe('Display name of the API (consent pages).'),
  scopes: z
    .array(z.string().regex(scopeToken, 'is not a valid scope token (RFC 6749 §3.3)'))
    .default([])
    .describe('Scopes this API understands.'),
  /** Human descriptions of scopes, shown on consent pages. */
  scope_descriptions: z
    .record(z.string(), z.string())
    .default({})
    .describe('Human text per scope, shown on consent pages.'),
  /** Access token lifetime for this resource; defaults to tokens.access_token_ttl. */
  access_token_ttl: duration(0)
    .optional()
    .describe('Access token lifetime for this API; default tokens.access_token_ttl.'),
});

export const clientSchema = z.strictObject({
  client_id: z
    .string()
    .min(1)
    .max(128)
    .regex(/^[\x21-\x7E]+$/, 'must be printable ASCII without spaces'),
  client_name: z.string().optional().describe('Display name (RFC 7591).'),
  client_secret: z
    .string()
    .min(16, 'must be at least 16 characters (use `portcullis init` to generate one)')
    .optional()
    .describe('Secret for client_secret_basic/post; stored as SHA-256. Use ${env:NAME} or ${file:PATH}.'),
  token_endpoint_auth_method: z
    .enum(AUTH_METHODS)
    .default('client_secret_basic')
    .describe('How the client authenticates (RFC 7591).'),
  token_endpoint_auth_signing_alg: z
    .enum(ASSERTION_ALGORITHMS)
    .optional()
    .describe('Only algorithm accepted on its private_key_jwt assertions; default any asymmetric one.'),
  grant_types: z
    .array(z.string())
    .default(['client_credentials'])
    .superRefine((grants, ctx) => {
      for (const g of grants) {
        if (g === 'password' || g === 'implicit')
          ctx.addIssue({ code: 'custom', message: `"${g}" is not supported: OAuth 2.1 removed it` });
        else if (!(GRANT_TYPES as readonly string[]).includes(g))
          ctx.addIssue({ code: 'custom', message: `"${g}" is not a known grant type (${GRANT_TYPES.join(', ')})` });
      }
    }),
  redirect_uris: z.array(z.url()).default([]).describe('Exact redirect URIs (authorization code flow).'),
  response_types: z.array(z.string()).optional(),
  scope: z.string().default('').describe('Space-separated scopes the client may be granted.'),
  jwks: z
    .strictObject({ keys: z.array(jwk) })
    .optional()
    .describe('Public keys for private_key_jwt (RFC 7591).'),
  jwks_uri: z.url().optional().describe('URL of the public keys for private_key_jwt.'),
  resources: z
    .array(z.string())
    .optional()
    .describe('Resource identifiers the client may get tokens for; default: the resources defining any of its scopes.'),
  disabled: z.boolean().default(false).describe('A disabled client cannot authenticate.'),
  post_logout_redirect_uris: z
    .array(z.url())
    .default([])
    .describe('Exact URIs the end-session endpoint may redirect to after logout (OIDC RP-Initiated Logout).'),
  require_pushed_authorization_requests: z
    .boolean()
    .default(false)
    .describe('Refuse authorization requests that did not come through /par (RFC 9126 §6).'),
  logo_uri: z.url().optional().describe('Logo shown on the consent page (RFC 7591).'),
  client_uri: z.url().optional().describe('Home page of the client, linked from the consent page (RFC 7591).'),
  policy_uri: z.url().optional().describe('Privacy policy of the client, linked from the consent page (RFC 7591).'),
  tos_uri: z.url().optional().describe('Terms of service of the client, linked from the consent page (RFC 7591).'),
  require_mfa: z
    .boolean()
    .default(false)
    .describe(
      'Every sign-in for this client needs a second factor (TOTP, passkey or recovery code), whatever mfa.required says.',
    ),
  dpop_bound_access_tokens: z
    .boolean()
    .default(false)
    .describe(
      'Every token request of this client must carry a DPoP proof, and its access tokens are always DPoP-bound (RFC 9449 §5.2).',
    ),
  refresh_token_requires_offline_access: z
    .boolean()
    .default(true)
    .describe(
      'For OpenID requests (scope openid), issue a refresh token only when offline_access was granted. Requests without openid get one whenever grant_types has refresh_token.',
    ),
});

export const userSchema = z.strictObject({
  username: z.string().min(1).max(256),
  password: z.string().min(1).optional().describe('Initial password, stored as argon2id. Use ${env:NAME}.'),
  email: z.string().optional(),
  name: z.string().optional(),
  disabled: z.boolean().default(false),
  totp_secret: z
    .string()
    .regex(/^[A-Za-z2-7]+=*$/, 'must be base32 (RFC 4648 §6)')
    .refine((v) => v.replace(/=+$/, '').length >= 16, { message: 'must be at least 80 bits (16 base32 characters)' })
    .optional()
    .describe(
      'Base32 TOTP secret (RFC 6238) to start the user enrolled; stored encrypted under the KEK. Use ${env:NAME}.',
    ),
});

/** HTTP methods a gateway route may name in `scopes`; "*" covers every method not named. */
export const GATEWAY_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', '*'] as const;

export const gatewayRouteSchema = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(100)
    .regex(/^[\x21-\x7E]+$/, 'must be printable ASCII without spaces')
    .optional()
    .describe('Names the route in gateway.denied / gateway.usage events; default its host (if any) and path_prefix.'),
  path_prefix: z
    .string()
    .regex(
      /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/,
      'must start with / and be a plain path (no query, fragment or spaces)',
    )
    .refine((v) => !/(^|\/)\.\.?(\/|$)/.test(v) && !v.includes('//'), {
      message: 'must not contain "." or ".." segments or "//"',
    })
    .describe(
      'Requests whose path is this prefix or continues it after a "/" take this route; the longest matching prefix wins.',
    ),
  host: z
    .string()
    .regex(/^[a-z0-9.-]+$/, 'must be a lower-case host name without port')
    .optional()
    .describe('Only requests whose Host header (port ignored) is this name take the route; default any host.'),
  upstream: z
    .url()
    .refine((v) => /^https?:\/\//.test(v) && !v.includes('?') && !v.includes('#'), {
      message: 'must be an http:// or https:// URL without query or fragment',
    })
    .describe('Where allowed requests go; a path in it is prepended to the forwarded path.'),
  resource: z
    .string()
    .describe(
      'The audience every token must name (RFC 8707 / RFC 9068 §4): an identifier from resources[]; its RFC 9728 metadata is served by the gateway.',
    ),
  scopes: z
    .record(z.string(), z.array(z.string().regex(scopeToken, 'is not a valid scope token (RFC 6749 §3.3)')))
    .superRefine((rec, ctx) => {
      if (Object.keys(rec).length === 0)
        ctx.addIssue({ code: 'custom', message: 'name at least one method (or "*"); an empty list requires no scope' });
      for (const k of Object.keys(rec))
        if (!(GATEWAY_METHODS as readonly string[]).includes(k))
          ctx.addIssue({ code: 'custom', message: `"${k}" is not one of ${GATEWAY_METHODS.join(', ')}` });
    })
    .describe(
      'Scopes a token needs, by HTTP method, e.g. {"GET": ["orders:read"], "POST": ["orders:write"]}; "*" covers methods not named, HEAD falls back to GET. A method not covered is refused (405).',
    ),
  dpop: z
    .enum(['required', 'allowed'])
    .default('allowed')
    .describe('required: only DPoP-bound tokens with a valid proof (RFC 9449); allowed: Bearer or DPoP.'),
  rate_limit: rateRule(0, '1m').describe(
    "Requests per client (the token's client_id) on this route (0: no limit); over it the gateway answers 429.",
  ),
  strip_prefix: z.boolean().default(false).describe('Remove path_prefix before forwarding (/orders/7 -> /7 upstream).'),
  identity_headers: z
    .boolean()
    .default(true)
    .describe(
      "Send the token's sub, client_id, scope and jti upstream in {identity_header_prefix}sub, -client-id, -scope, -jti. Client-sent headers with that prefix are always removed.",
    ),
  forward_authorization: z
    .boolean()
    .default(false)
    .describe(
      'Forward the Authorization (and DPoP) header upstream; default stripped (the upstream trusts the gateway).',
    ),
  timeout: duration('30s')
    .refine((v) => v >= 1, { message: 'must be at least 1s' })
    .describe('Longest wait for the upstream response headers, and between body chunks (504 when headers are late).'),
});

export const gatewaySchema = z.strictObject({
  listen: z
    .strictObject({
      host: z.string().default('127.0.0.1').describe('Address the gateway listens on.'),
      port: z.number().int().min(0).max(65535).default(9080).describe('TCP port of the gateway (0: any free port).'),
    })
    .prefault({})
    .describe("The gateway's own listener, separate from the authorization server's listen."),
  public_origin: z
    .string()
    .refine(isOrigin, {
      message:
        'must be an origin such as https://api.example.com or https://api.example.com:8443 (no path, lower case)',
    })
    .optional()
    .describe(
      'The origin clients use to reach the gateway (https://host[:port]) when a TLS-terminating load balancer sits in front of it. Set: DPoP proofs must name exactly this origin in htu, X-Forwarded-Proto/X-Forwarded-Host sent upstream say so, and WWW-Authenticate points to resource metadata there. Unset: the gateway takes its origin from the Host header with the http scheme (right only when clients reach it directly over http). Forwarding headers from clients are never trusted either way.',
    ),
  routes: z
    .array(gatewayRouteSchema)
    .default([])
    .describe('Routes to upstream APIs; a request no route matches is refused (default deny).'),
  accepted_algorithms: z
    .array(z.enum(SIGNING_ALGORITHMS))
    .min(1)
    .default([...SIGNING_ALGORITHMS])
    .describe('JWS algorithms accepted on access tokens (asymmetric only: none and HMAC can never be listed).'),
  clock_skew: duration('5s')
    .refine((v) => v <= 300, { message: 'must be at most 5m' })
    .describe('Tolerance on exp, nbf and iat of access tokens.'),
  token_cache_size: z
    .number()
    .int()
    .min(0)
    .max(1_000_000)
    .default(10000)
    .describe(
      'Verified tokens kept in memory (signature checked once; expiry, audience, scopes and revocation every request). 0: no cache.',
    ),
  invalid_token_cache_size: z
    .number()
    .int()
    .min(0)
    .max(1_000_000)
    .default(10000)
    .describe(
      'Tokens that failed verification for a reason fixed by the token itself (malformed, algorithm, typ, issuer, claims, signature) remembered by SHA-256 for a minute, so a forged token sent again costs no signature check; it is still refused and recorded each time. An unknown kid is never remembered (the key may be published later). 0: no cache.',
    ),
  identity_header_prefix: z
    .string()
    .regex(/^[a-z0-9-]+-$/, 'must be lower-case letters, digits and "-", ending in "-"')
    .default('x-portcullis-')
    .describe('Prefix of the identity headers sent upstream.'),
  usage_flush_ms: z
    .number()
    .int()
    .min(50)
    .max(1000)
    .default(1000)
    .describe('How often aggregated gateway.usage records are written (ms; at most a second).'),
  upstream_connections: z
    .number()
    .int()
    .min(1)
    .max(10000)
    .default(128)
    .describe('Keep-alive connections per upstream origin.'),
  connect_timeout: duration('5s')
    .refine((v) => v >= 1, { message: 'must be at least 1s' })
    .describe('Longest wait to connect to an upstream (504 after it).'),
  remote: z
    .strictObject({
      url: z
        .url()
        .refine((v) => /^https?:\/\//.test(v) && !v.includes('?') && !v.includes('#'), {
          message: 'must be an http:// or https:// URL without query or fragment',
        })
        .describe(
          'Base URL at which this gateway reaches the authorization server (its issuer, or an internal address of it); the gateway follows {url}/revocations.',
        ),
      issuer: z
        .url()
        .optional()
        .describe(
          "The authorization server's issuer identifier: access tokens must carry it as iss. Default: url (the top-level issuer is not used by a --role gateway node).",
        ),
      client_id: z
        .string()
        .min(1)
        .describe('A client of the authorization server listed in its revocation.feed_clients (client_secret_basic).'),
      client_secret: z
        .string()
        .min(1)
        .describe(
          "That client's secret. Use ${env:NAME} or ${file:PATH}. Gateways sharing it also share DPoP nonces (derived from it).",
        ),
    })
    .optional()
    .describe(
      'Run this gateway apart from the authorization server (`portcullis start --role gateway`, required then): it gets the signing keys and revocations from {url}/revocations; no KEK, signing key or client is needed.',
    ),
});

/** One SIEM export sink (src/audit/export.ts). Fields that belong to another type are refused. */
const exportSinkSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 letters, digits, dot, dash or underscore')
      .describe('Names the sink and its cursor (renaming a sink starts it again from the first sealed event).'),
    type: z
      .enum(['file', 'webhook', 'syslog'])
      .describe('file: JSON lines; webhook: HTTP POST; syslog: RFC 5424 over TCP.'),
    format: z
      .enum(['ocsf', 'entries'])
      .default('ocsf')
      .describe('ocsf: OCSF 1.2.0 records; entries: the raw sealed entries (`audit verify --from-export` reads them).'),
    path: z.string().min(1).optional().describe('file: the file to append to (created 0600).'),
    url: z
      .string()
      .regex(/^https?:\/\//, 'must be an http(s) URL')
      .optional()
      .describe('webhook: the URL batches are POSTed to; any 2xx acknowledges the batch.'),
    headers: z
      .record(z.string(), z.string())
      .default({})
      .describe('webhook: extra request headers (e.g. authorization: ${env:SIEM_TOKEN}).'),
    body: z
      .enum(['jsonl', 'json_array'])
      .default('jsonl')
      .describe('webhook: JSON lines (application/x-ndjson) or one JSON array (application/json) per batch.'),
    host: z.string().min(1).optional().describe('syslog: the receiver host.'),
    port: z.number().int().min(1).max(65535).optional().describe('syslog: the receiver TCP port.'),
    tls: z
      .strictObject({
        ca: z
          .string()
          .optional()
          .describe('PEM CA certificate(s) to trust (use ${file:PATH}); default: the system CAs.'),
        cert: z.string().optional().describe('PEM client certificate, for receivers that want mutual TLS.'),
        key: z.string().optional().describe('PEM private key of the client certificate.'),
        servername: z.string().optional().describe('Name to check the certificate against (default: host).'),
        reject_unauthorized: z
          .boolean()
          .default(true)
          .describe('false accepts any certificate (testing only: anyone on the path could read the log).'),
      })
      .optional()
      .describe('syslog: connect with TLS (node:tls, at least TLS 1.2).'),
    facility: z.number().int().min(0).max(23).default(13).describe('syslog: RFC 5424 facility (13: log audit).'),
    app_name: z.string().min(1).max(48).default('portcullis').describe('syslog: APP-NAME.'),
    batch_size: z.number().int().min(1).max(5000).default(500).describe('Events per batch (one POST, one write).'),
    timeout: duration('10s')
      .refine((v) => v >= 1 && v <= 300, { message: 'must be between 1s and 5m' })
      .describe('How long a send (or syslog connect) may take before it counts as failed.'),
    retry_max: duration('60s')
      .refine((v) => v >= 1 && v <= 3600, { message: 'must be between 1s and 1h' })
      .describe('Longest wait between retries while the sink is down (the wait doubles from 0.25s up to this).'),
  })
  .superRefine((sk, ctx) => {
    const need = (key: 'path' | 'url' | 'host' | 'port') => {
      if (sk[key] === undefined)
        ctx.addIssue({ code: 'custom', path: [key], message: `is required for a ${sk.type} sink` });
    };
    const refuse = (key: 'path' | 'url' | 'host' | 'port' | 'tls') => {
      if (sk[key] !== undefined)
        ctx.addIssue({ code: 'custom', path: [key], message: `does not apply to a ${sk.type} sink` });
    };
    if (sk.type === 'file') {
      need('path');
      for (const k of ['url', 'host', 'port', 'tls'] as const) refuse(k);
    } else if (sk.type === 'webhook') {
      need('url');
      for (const k of ['path', 'host', 'port', 'tls'] as const) refuse(k);
    } else {
      need('host');
      need('port');
      for (const k of ['path', 'url'] as const) refuse(k);
    }
    if (sk.tls && (sk.tls.cert === undefined) !== (sk.tls.key === undefined))
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'cert and key go together' });
  });

export const configSchema = z.strictObject({
  issuer: z
    .url()
    .refine((v) => !v.includes('?') && !v.includes('#'), {
      message: 'must not contain a query or fragment (RFC 8414 §2)',
    })
    .optional()
    .describe('Issuer identifier: the public base URL; default http://{listen.host}:{listen.port}.'),
  listen: z
    .strictObject({
      host: z.string().default('127.0.0.1').describe('Address to listen on.'),
      port: z.number().int().min(0).max(65535).default(9000).describe('TCP port (0: any free port).'),
    })
    .prefault({}),
  storage: z
    .strictObject({
      url: z
        .string()
        .default('sqlite:./data/portcullis.db')
        .describe('sqlite:PATH (embedded, WAL) or postgres://user@host:port/db')
        .refine((v) => v.startsWith('sqlite:') || v.startsWith('postgres://') || v.startsWith('postgresql://'), {
          message: 'must start with sqlite: or postgres://',
        }),
      /** Longest time a token event may wait for its group commit, in milliseconds. */
      group_commit_ms: z
        .number()
        .int()
        .min(0)
        .max(50)
        .default(0)
        .describe('Extra wait (ms) to grow event batches; 0 = commit every event-loop turn.'),
    })
    .prefault({}),
  keys: z
    .strictObject({
      algorithm: z.enum(SIGNING_ALGORITHMS).default('ES256').describe('Signing algorithm for new keys.'),
      rotation_period: duration('30d').describe('How long a key signs before the next one takes over.'),
      jwks_max_age: duration('10m').describe(
        'JWKS Cache-Control max-age; new keys are published at least this long before they sign.',
      ),
      /** Where the key-encryption key lives when PORTCULLIS_KEK is not set. Created 0600 on first start. */
      kek_file: z
        .string()
        .default('./data/kek')
        .describe('Key-encryption key file (0600, created on first start) when PORTCULLIS_KEK is unset.'),
    })
    .prefault({}),
  tokens: z
    .strictObject({
      access_token_ttl: duration('10m').describe('Access token lifetime.'),
      id_token_ttl: duration('10m').describe('ID token lifetime (OpenID Connect).'),
      refresh_token_idle_ttl: duration('24h').describe(
        'A refresh token unused for this long is dead (each rotation starts the period again).',
      ),
      refresh_token_absolute_ttl: duration('14d').describe(
        "A grant's refresh tokens all die this long after the user authorised it, however often rotated.",
      ),
      /** Tolerance for clocks of clients signing assertions. */
      clock_skew: duration('30s').describe("Tolerance for other parties' clocks."),
      /** Longest lifetime (exp - iat) accepted on a private_key_jwt client assertion. */
      client_assertion_max_lifetime: duration('5m').describe(
        'Longest exp - iat accepted on private_key_jwt assertions.',
      ),
    })
    .prefault({}),
  dpop: z
    .strictObject({
      signing_algs: z
        .array(z.enum(DPOP_ALGORITHMS))
        .min(1)
        .default([...DPOP_ALGORITHMS])
        .describe(
          'Algorithms accepted on DPoP proofs (asymmetric only; none and HMAC never are). Published in discovery.',
        ),
      iat_window: duration('60s')
        .refine((v) => v >= 1 && v <= 600, { message: 'must be between 1s and 10m' })
        .describe(
          'A DPoP proof is accepted only while its iat is within this long of now (either way); its jti is remembered this long (plus tokens.clock_skew) to refuse replays (RFC 9449 §11.1).',
        ),
      require_nonce: z
        .boolean()
        .default(false)
        .describe(
          'Every DPoP proof at /token must carry a server nonce (RFC 9449 §8): a proof without one (or with a stale one) gets use_dpop_nonce and a DPoP-Nonce header.',
        ),
      nonce_rotation: duration('5m')
        .refine((v) => v >= 10 && v <= 86400, { message: 'must be between 10s and 24h' })
        .describe(
          'A new nonce every this long; a nonce is accepted during its own period and the next one (so for at most twice this). Stateless (derived from the KEK and the time), so every node agrees.',
        ),
    })
    .prefault({}),
  limits: z
    .strictObject({
      body_bytes: z.number().int().min(256).max(1048576).default(16384).describe('Largest request body (413 above).'),
      parameter_bytes: z
        .number()
        .int()
        .min(1024, 'must be at least 1024 (an access token alone is about 700 bytes)')
        .max(65536)
        .default(4096)
        .describe('Largest single form parameter.'),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z
        .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
        .default('info')
        .describe('pino log level.'),
    })
    .prefault({}),
  sessions: z
    .strictObject({
      idle_timeout: duration('30m').describe('A sign-in session unused for this long ends.'),
      absolute_timeout: duration('12h').describe('A sign-in session ends this long after sign-in, used or not.'),
    })
    .prefault({}),
  authorization: z
    .strictObject({
      code_ttl: duration('60s').describe('Authorization code lifetime (single use).'),
      par_ttl: duration('60s').describe('Lifetime of a request_uri from /par (RFC 9126).'),
      interaction_ttl: duration('15m').describe(
        'How long a validated authorization request waits for the user to sign in and consent.',
      ),
    })
    .prefault({}),
  device: z
    .strictObject({
      code_ttl: duration('10m')
        .refine((v) => v >= 60 && v <= 3600, { message: 'must be between 1m and 1h' })
        .describe(
          'Device authorization grant (RFC 8628): how long a device_code and its user_code wait for the user (expires_in).',
        ),
      interval: duration('5s')
        .refine((v) => v >= 1 && v <= 60, { message: 'must be between 1s and 60s' })
        .describe(
          'Minimum seconds between polls at /token; polling faster answers slow_down and adds 5 s (RFC 8628 §3.5).',
        ),
      max_failures_per_session: z
        .number()
        .int()
        .min(1)
        .max(100)
        .default(5)
        .describe('Wrong user codes one sign-in session may enter within failure_window before it is refused.'),
      max_failures_per_ip: z
        .number()
        .int()
        .min(1)
        .max(10000)
        .default(20)
        .describe('Wrong user codes one IP address may enter within failure_window (higher: people share addresses).'),
      failure_window: duration('15m').describe(
        'Window of the wrong-code limits: each limit is a burst, then one more code per window/limit (counters in Redis when redis.url is set, else per process).',
      ),
    })
    .prefault({}),
  mfa: z
    .strictObject({
      required: z
        .boolean()
        .default(false)
        .describe(
          'Every sign-in needs a second factor. Also sets the password minimum: 8 characters with MFA, 15 when the password is the only factor (NIST SP 800-63B-4 §3.1.1.2).',
        ),
      require_enrolled: z
        .boolean()
        .default(true)
        .describe(
          'A user who has enrolled a second factor must use it at every sign-in (false: only when policy or acr_values asks).',
        ),
      totp_issuer: z
        .string()
        .min(1)
        .max(64)
        .optional()
        .describe('Issuer label in authenticator apps (otpauth URI); default branding.name.'),
      max_failures: z
        .number()
        .int()
        .min(1)
        .max(100)
        .default(5)
        .describe(
          'Wrong second-factor codes per account, across all sessions, before the factor step locks (NIST SP 800-63B-4 §3.2.2 caps this at 100).',
        ),
      lock_period: duration('15m').describe(
        'How long the second-factor step stays locked after max_failures; the count also resets after this long without a failure.',
      ),
      phishing_resistant_scopes: z
        .array(z.string().regex(scopeToken, 'is not a valid scope token (RFC 6749 §3.3)'))
        .default([])
        .describe(
          'Scopes that only a passkey sign-in may get (phishing-resistant, NIST SP 800-63B-4 §3.2.5): TOTP and recovery codes are not enough.',
        ),
      webauthn_rp_id: z
        .string()
        .optional()
        .describe("WebAuthn relying party ID (a domain); default the issuer's host name. Passkeys are bound to it."),
      webauthn_rp_name: z.string().optional().describe('Name shown by the passkey prompt; default branding.name.'),
    })
    .prefault({}),
  throttle: z
    .strictObject({
      delay_after: z
        .number()
        .int()
        .min(1)
        .max(100)
        .default(3)
        .describe(
          'Consecutive wrong passwords for one account before each further attempt must wait (1 s, then doubling up to delay_max).',
        ),
      delay_max: duration('1m').describe('Longest wait between attempts before the lock.'),
      lock_after: z
        .number()
        .int()
        .min(1)
        .max(100, 'must be at most 100 (NIST SP 800-63B-4 §3.2.2)')
        .default(10)
        .describe('Consecutive wrong passwords that lock the account for lock_duration (NIST caps this at 100).'),
      lock_duration: duration('15m').describe(
        'How long a locked account refuses every password (`portcullis users unlock` ends it early).',
      ),
      login_failures_per_ip: rateRule(20, '15m').describe(
        'Failed sign-ins from one IP address (IPv6: one /64), across all accounts: password spraying.',
      ),
      login_per_ip: rateRule(100, '1m').describe('Sign-in attempts (POST /login) from one IP address.'),
      login_global: rateRule(3000, '1m').describe('Sign-in attempts from everywhere together.'),
      mfa_per_ip: rateRule(30, '5m').describe('Second-factor attempts from one IP address.'),
      mfa_global: rateRule(3000, '1m').describe('Second-factor attempts from everywhere together.'),
      token_per_ip: rateRule(6000, '1m').describe('Token endpoint requests from one IP address.'),
      token_global: rateRule(0, '1m').describe('Token endpoint requests from everywhere together (0: no limit).'),
      introspect_per_ip: rateRule(6000, '1m').describe('Introspection requests from one IP address.'),
      introspect_global: rateRule(0, '1m').describe('Introspection requests from everywhere together (0: no limit).'),
      device_per_ip: rateRule(60, '1m').describe('Code submissions on the device verification page from one IP.'),
      device_global: rateRule(3000, '1m').describe('Code submissions on the device verification page from everywhere.'),
    })
    .prefault({}),
  redis: z
    .strictObject({
      url: z
        .string()
        .refine((v) => /^rediss?:\/\//.test(v), { message: 'must start with redis:// or rediss://' })
        .optional()
        .describe(
          'Redis for state shared by several nodes (rate-limit counters, the DPoP proof jti replay cache). Unset: counters live in each process and DPoP jtis in the database.',
        ),
      key_prefix: z.string().max(100).default('portcullis:').describe('Prefix of every Redis key Portcullis writes.'),
    })
    .prefault({}),
  revocation: z
    .strictObject({
      max_feed_lag: duration('5s')
        .refine((v) => v >= 1 && v <= 300, { message: 'must be between 1s and 5m' })
        .describe(
          'How long a node may be without a revocation bus (PostgreSQL LISTEN/NOTIFY, Redis pub/sub) before it reports itself unhealthy: /readyz answers 503, revocation.feed_lost is written, and a gateway refuses every token until the bus is back.',
        ),
      poll_interval: duration('1s')
        .refine((v) => v <= 60, { message: 'must be at most 60s' })
        .describe(
          'While the bus is down (or there is none), read new revocations from the table this often and before every introspection, userinfo and revocation request. 0 turns the fallback off (tests that prove the bus); never in production.',
        ),
      redis: z
        .boolean()
        .default(true)
        .describe('When redis.url is set, also carry revocations over Redis pub/sub (in addition to PostgreSQL).'),
      feed_clients: z
        .array(z.string().min(1))
        .default([])
        .describe(
          'Clients (client_id) allowed to read GET /revocations, the remote revocation feed a `--role gateway` node follows; each authenticates as at /token. Empty: the endpoint refuses everyone.',
        ),
    })
    .prefault({}),
  audit: z
    .strictObject({
      seal: z
        .boolean()
        .default(true)
        .describe(
          'Run the audit sealer on this node: it gives every committed event a leaf index in the RFC 9162 Merkle tree and signs checkpoints. Several nodes may run it; one at a time seals (a PostgreSQL advisory lock). false: this node never seals (another must).',
        ),
      checkpoint_interval: duration('1s')
        .refine((v) => v >= 1 && v <= 3600, { message: 'must be between 1s and 1h' })
        .describe(
          'How often the sealer seals new events and signs a checkpoint over them (at most one checkpoint per interval, none when nothing new was sealed).',
        ),
      origin: z
        .string()
        .regex(/^[^\s/][^\s]*$/, 'must be one word without spaces, like auth.example.com/audit')
        .max(200)
        .optional()
        .describe(
          "The log's name in its checkpoints (C2SP tlog-checkpoint origin) and the audit key's signed-note name. Default: the issuer's host and path followed by /audit (/audit/gateway on a `--role gateway` node, which keeps its own log).",
        ),
      checkpoint_sinks: z
        .array(
          z.discriminatedUnion('type', [
            z
              .strictObject({
                type: z.literal('file'),
                path: z
                  .string()
                  .min(1)
                  .describe(
                    'File the checkpoints are appended to (JSON lines, fsynced); a relative path is resolved from the working directory.',
                  ),
              })
              .describe(
                'Appends one JSON line per checkpoint to a file (ideally on another machine or an append-only mount).',
              ),
            z
              .strictObject({
                type: z.literal('webhook'),
                url: z
                  .url()
                  .refine((v) => /^https?:\/\//.test(v), { message: 'must be an http:// or https:// URL' })
                  .describe('URL the checkpoints are POSTed to (application/json).'),
                headers: z
                  .record(z.string(), z.string())
                  .optional()
                  .describe('Extra request headers, e.g. authorization (secrets by ${env:NAME} / ${file:PATH}).'),
              })
              .describe(
                'POSTs each checkpoint as JSON; retries with backoff, then sends the newest (they are cumulative).',
              ),
            z
              .strictObject({ type: z.literal('stdout') })
              .describe('Writes one JSON line per checkpoint ({"audit_checkpoint": …}) on standard output.'),
          ]),
        )
        .default([])
        .describe(
          'Copies of every signed checkpoint outside the database, so rewriting the events and their checkpoints together is still caught (`audit verify --checkpoints FILE`). A failing sink never blocks sealing: it is logged and counted (portcullis_audit_sink_failures_total).',
        ),
      export_interval: duration('1s')
        .refine((v) => v >= 1 && v <= 3600, { message: 'must be between 1s and 1h' })
        .describe(
          'How often each export sink is sent the events sealed since its cursor (also right after each checkpoint this node signs).',
        ),
      export_sinks: z
        .array(exportSinkSchema)
        .max(20)
        .default([])
        .superRefine((sinks, ctx) => {
          const seen = new Set<string>();
          sinks.forEach((sk, i) => {
            if (seen.has(sk.name))
              ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `${sk.name} is used twice` });
            seen.add(sk.name);
          });
        })
        .describe(
          'SIEM export (docs/audit.md, Export): every sealed event, in leaf order, to each sink, resumable by a per-sink cursor.',
        ),
    })
    .prefault({}),
  admin: z
    .strictObject({
      resource: z
        .string()
        .optional()
        .describe(
          'Turns the admin API (/admin/…, docs/admin-api.md) on: it accepts only access tokens whose audience is this identifier from resources[] (give that resource the scope audit:read and grant it to an operator client). Unset: the admin API answers 404.',
        ),
    })
    .prefault({}),
  branding: z
    .strictObject({
      name: z
        .string()
        .min(1)
        .max(100)
        .default('Portcullis')
        .describe('Name shown on sign-in, consent and logout pages.'),
      logo_uri: z
        .string()
        .refine((v) => /^https:\/\//.test(v) || v.startsWith('/'), { message: 'must be an https URL or a path' })
        .optional()
        .describe('Logo on the pages (https URL or a path on this server).'),
      primary_color: z
        .string()
        .regex(/^#[0-9a-fA-F]{6}$/, 'must be a colour like #1f4e79')
        .default('#1f4e79')
        .describe('Buttons and links.'),
      background_color: z
        .string()
        .regex(/^#[0-9a-fA-F]{6}$/, 'must be a colour like #f5f7fa')
        .default('#f5f7fa')
        .describe('Page background.'),
    })
    .prefault({}),
  gateway: gatewaySchema
    .optional()
    .describe(
      'The API gateway: its own listener, in the same process as the authorization server, or alone (`--role gateway`, with gateway.remote). Unset: no gateway.',
    ),
  resources: z.array(resourceSchema).default([]),
  clients: z.array(clientSchema).default([]),
  users: z.array(userSchema).default([]),
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ResourceConfig = z.output<typeof resourceSchema>;
export type ClientConfig = z.output<typeof clientSchema>;
export type UserConfig = z.output<typeof userSchema>;
export type GatewayConfig = z.output<typeof gatewaySchema>;
export type GatewayRouteConfig = z.output<typeof gatewayRouteSchema>;

/** The validated configuration with the issuer resolved. Deep-frozen once loaded. */
export type Config = Readonly<ParsedConfig & { issuer: string }>;
