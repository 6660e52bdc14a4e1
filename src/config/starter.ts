import { randomToken } from '../lib/crypto.ts';

export const DEMO_RESOURCE = 'https://api.example.test';
export const DEMO_CLIENT_ID = 'demo-client';
/** The demo's sign-in client: public (PKCE), loopback redirect on any port (RFC 8252 §7.3). */
export const DEMO_WEB_CLIENT_ID = 'demo-web';
export const DEMO_REDIRECT_URI = 'http://127.0.0.1/callback';
export const DEMO_USERNAME = 'demo';

/** The configuration used when `start` runs without --config: a demo on SQLite in ./data. */
export const DEMO_CONFIG = {
  resources: [
    {
      identifier: DEMO_RESOURCE,
      name: 'Demo API',
      scopes: ['demo:read', 'demo:write'],
      scope_descriptions: { 'demo:read': 'Read demo data', 'demo:write': 'Change demo data' },
    },
  ],
  clients: [
    {
      client_id: DEMO_WEB_CLIENT_ID,
      client_name: 'Demo web app',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [DEMO_REDIRECT_URI],
      scope: 'openid profile email offline_access demo:read',
    },
  ],
};

/** The commented starter file `portcullis init` writes. */
export function starterConfig(): { text: string; clientSecret: string } {
  const clientSecret = randomToken(32);
  const text = `# Portcullis configuration. Every key is documented in docs/configuration.md.
# Secrets may be written as \${env:NAME} or \${file:PATH} instead of literally.

# The issuer identifier: the public base URL of this server (no query, no fragment).
issuer: http://127.0.0.1:9000

listen:
  host: 127.0.0.1
  port: 9000

storage:
  # sqlite:PATH (embedded, WAL) or postgres://user@host:5432/db for several nodes.
  url: sqlite:./data/portcullis.db

keys:
  algorithm: ES256          # ES256 | EdDSA | PS256 | RS256
  rotation_period: 30d      # a new key signs every period...
  jwks_max_age: 10m         # ...and is published at least this long before it signs
  # The key-encryption key protecting private keys at rest; PORTCULLIS_KEK overrides it.
  kek_file: ./data/kek

tokens:
  access_token_ttl: 10m     # short by default; per resource override: resources[].access_token_ttl
  clock_skew: 30s
  client_assertion_max_lifetime: 5m

limits:
  body_bytes: 16384
  parameter_bytes: 4096

log:
  level: info

# Resource servers (APIs) tokens are issued for. The identifier becomes the token's aud (RFC 8707).
resources:
  - identifier: https://api.example.com
    name: Example API
    scopes: [orders:read, orders:write]

# Clients, in RFC 7591 metadata names.
clients:
  - client_id: example-service
    client_secret: ${clientSecret}
    token_endpoint_auth_method: client_secret_basic   # client_secret_post | private_key_jwt | none
    grant_types: [client_credentials]
    scope: "orders:read"
    resources: [https://api.example.com]

# Users seeded at start (passwords are hashed with argon2id). Prefer \${env:...} for passwords.
users: []
`;
  return { text, clientSecret };
}
