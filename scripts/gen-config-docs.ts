// Generates docs/configuration.md from the zod schema (the single source of truth). Run: npm run docs:config
import { writeFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../src/config/schema.ts';

type JS = {
  type?: string | string[];
  properties?: Record<string, JS>;
  items?: JS;
  anyOf?: JS[];
  oneOf?: JS[];
  const?: unknown;
  enum?: unknown[];
  default?: unknown;
  description?: string;
  required?: string[];
};

const schema = z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' }) as JS;
const rows: string[] = [];

function typeOf(s: JS): string {
  if (s.enum) return s.enum.map((e) => `\`${String(e)}\``).join(' \\| ');
  if (s.anyOf) return [...new Set(s.anyOf.map(typeOf))].join(' or ');
  if (s.oneOf) return 'object';
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (s.type === 'array') return `list of ${s.items ? typeOf(s.items) : 'values'}`;
  return Array.isArray(s.type) ? s.type.join(' or ') : (s.type ?? 'duration');
}

function walk(s: JS, path: string): void {
  const def = s.default === undefined ? '' : `\`${JSON.stringify(s.default)}\``;
  if (path)
    rows.push(
      `| \`${path}\` | ${typeOf(s).replace('number or string', 'duration')} | ${def} | ${s.description ?? ''} |`,
    );
  const obj = s.type === 'array' && s.items ? s.items : s;
  const prefix = s.type === 'array' ? `${path}[]` : path;
  for (const [k, v] of Object.entries(obj.properties ?? {})) walk(v, prefix ? `${prefix}.${k}` : k);
  // A discriminated union (e.g. audit.checkpoint_sinks[]): one row per variant, then its own keys.
  for (const v of obj.oneOf ?? []) {
    const tag = v.properties?.type?.const;
    rows.push(`| \`${prefix}\` with \`type: ${String(tag)}\` | object |  | ${v.description ?? ''} |`);
    for (const [k, p] of Object.entries(v.properties ?? {})) if (k !== 'type') walk(p, `${prefix}.${k}`);
  }
}
walk(schema, '');

const out = `# Configuration

Generated from \`src/config/schema.ts\` by \`npm run docs:config\`; do not edit by hand.

Portcullis reads one YAML or JSON file (\`npm start -- --config FILE\`). Every value is validated once at start;
an invalid file stops start-up with one line per problem naming the key, e.g.
\`clients[0].client_secret: is required when token_endpoint_auth_method is client_secret_post\`.
The loaded configuration is frozen. Without a file, the server runs the demo configuration on SQLite in ./data.

Secrets: any string value may contain \`\${env:NAME}\` (an environment variable) or \`\${file:PATH}\` (a file's
contents without the trailing newline, relative to the configuration file). A missing variable or unreadable file is
a configuration error naming the key.

Durations: a number of seconds, or a string such as \`90s\`, \`10m\`, \`12h\`, \`30d\`, \`1w\`.

Environment: \`PORTCULLIS_KEK\` (32 bytes, base64/base64url/hex) is the key-encryption key for private signing keys;
without it \`keys.kek_file\` is used (created 0600 on first start; refused when group/world readable).

| key | type | default | meaning |
| --- | --- | --- | --- |
${rows.join('\n')}

## Cross-field rules

- \`clients[].client_secret\` is required for \`client_secret_basic\`/\`client_secret_post\` and refused otherwise.
- \`private_key_jwt\` needs \`jwks\` or \`jwks_uri\` (not both).
- \`none\` (public clients) may not use \`client_credentials\`.
- Every scope in \`clients[].scope\` must be defined by some \`resources[].scopes\` (or be an OpenID scope).
- \`clients[].resources\` must name identifiers in \`resources[]\`; \`grant_types\` never accepts \`password\` or \`implicit\`.
- \`client_id\`, resource identifiers and usernames are unique.

## Reconciliation

At every start the clients and users in the file are written to storage (secrets hashed) in one transaction, with
one \`client.*\`/\`user.*\` event per change and a \`config.applied\` event carrying a fingerprint of the effective
configuration. Clients that came from the file and are no longer in it are deleted; clients created by the CLI or the
demo are left alone.
`;
writeFileSync(new URL('../docs/configuration.md', import.meta.url), out);
process.stdout.write(`docs/configuration.md: ${rows.length} keys\n`);
