import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { ConfigError } from '../errors/oauth-error.ts';
import { checkNewPassword, passwordMinLength } from '../lib/password-policy.ts';
import { type Config, configSchema, type ParsedConfig } from './schema.ts';

/** OIDC scopes that need no resource. */
export const OIDC_SCOPES = ['openid', 'profile', 'email', 'offline_access'];

function pathOf(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || '(root)';
}

/** Replaces ${env:NAME} and ${file:PATH} in every string value; collects a problem per unresolved reference. */
function substituteSecrets(node: unknown, path: (string | number)[], problems: string[], baseDir: string): unknown {
  if (typeof node === 'string') {
    return node.replace(/\$\{(env|file):([^}]+)\}/g, (_m, kind: string, ref: string) => {
      if (kind === 'env') {
        const v = process.env[ref];
        if (v === undefined) {
          problems.push(`${pathOf(path)}: environment variable ${ref} is not set`);
          return '';
        }
        return v;
      }
      try {
        return readFileSync(resolve(baseDir, ref), 'utf8').replace(/\r?\n$/, '');
      } catch (e) {
        problems.push(`${pathOf(path)}: cannot read file ${ref} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
        return '';
      }
    });
  }
  if (Array.isArray(node)) return node.map((v, i) => substituteSecrets(v, [...path, i], problems, baseDir));
  if (node && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) out[k] = substituteSecrets(v, [...path, k], problems, baseDir);
    return out;
  }
  return node;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

function formatZodIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => {
    let msg = i.message;
    if (i.code === 'unrecognized_keys') msg = `unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
    else if (i.code === 'invalid_type' && /received undefined/.test(i.message)) msg = 'is required';
    return `${pathOf(i.path)}: ${msg}`;
  });
}

/** Cross-field rules the schema alone cannot express. Each returns problems naming the key. */
function checkCrossFields(c: ParsedConfig): string[] {
  const problems: string[] = [];
  const resourceIds = new Set<string>();
  const allScopes = new Set<string>(OIDC_SCOPES);
  c.resources.forEach((r, i) => {
    if (resourceIds.has(r.identifier)) problems.push(`resources[${i}].identifier: duplicate "${r.identifier}"`);
    resourceIds.add(r.identifier);
    for (const s of r.scopes) allScopes.add(s);
  });
  const clientIds = new Set<string>();
  c.clients.forEach((cl, i) => {
    const at = `clients[${i}]`;
    if (clientIds.has(cl.client_id)) problems.push(`${at}.client_id: duplicate "${cl.client_id}"`);
    clientIds.add(cl.client_id);
    const m = cl.token_endpoint_auth_method;
    if ((m === 'client_secret_basic' || m === 'client_secret_post') && !cl.client_secret)
      problems.push(`${at}.client_secret: is required when token_endpoint_auth_method is ${m}`);
    if (m !== 'client_secret_basic' && m !== 'client_secret_post' && cl.client_secret)
      problems.push(`${at}.client_secret: must not be set when token_endpoint_auth_method is ${m}`);
    if (m === 'private_key_jwt' && !cl.jwks && !cl.jwks_uri)
      problems.push(`${at}.jwks: jwks or jwks_uri is required when token_endpoint_auth_method is private_key_jwt`);
    if (cl.jwks && cl.jwks_uri) problems.push(`${at}.jwks_uri: set jwks or jwks_uri, not both (RFC 7591 §2)`);
    if (m === 'none' && cl.grant_types.includes('client_credentials'))
      problems.push(
        `${at}.grant_types: client_credentials needs a confidential client (token_endpoint_auth_method none)`,
      );
    for (const s of cl.scope.split(' ').filter(Boolean)) {
      if (!allScopes.has(s)) problems.push(`${at}.scope: "${s}" is not a scope of any resource in resources[]`);
    }
    (cl.resources ?? []).forEach((r, j) => {
      if (!resourceIds.has(r)) problems.push(`${at}.resources[${j}]: "${r}" is not an identifier in resources[]`);
    });
    if (cl.grant_types.includes('authorization_code') && cl.redirect_uris.length === 0)
      problems.push(`${at}.redirect_uris: at least one is required for the authorization_code grant`);
    if (cl.require_pushed_authorization_requests && !cl.grant_types.includes('authorization_code'))
      problems.push(`${at}.require_pushed_authorization_requests: only meaningful with the authorization_code grant`);
    cl.post_logout_redirect_uris.forEach((u, j) => {
      if (u.includes('#'))
        problems.push(
          `${at}.post_logout_redirect_uris[${j}]: must not contain a fragment (OIDC RP-Initiated Logout §3)`,
        );
    });
    cl.redirect_uris.forEach((u, j) => {
      if (u.includes('#')) problems.push(`${at}.redirect_uris[${j}]: must not contain a fragment (RFC 6749 §3.1.2)`);
    });
  });
  if (c.gateway) problems.push(...checkGateway(c));
  problems.push(...checkAdmin(c));
  const usernames = new Set<string>();
  c.users.forEach((u, i) => {
    if (usernames.has(u.username)) problems.push(`users[${i}].username: duplicate "${u.username}"`);
    usernames.add(u.username);
    // A seeded password obeys the same rules as one set with the CLI (NIST SP 800-63B-4 §3.1.1.2).
    if (u.password !== undefined) {
      const problem = checkNewPassword(u.password, {
        minLength: passwordMinLength(c.mfa.required),
        contextWords: [u.username, c.branding.name],
      });
      if (problem) problems.push(`users[${i}].password: ${problem}`);
    }
  });
  return problems;
}

/** The admin API's audience must be a declared resource. */
function checkAdmin(c: ParsedConfig): string[] {
  const r = c.admin.resource;
  if (r === undefined || c.resources.some((x) => x.identifier === r)) return [];
  return [`admin.resource: "${r}" is not an identifier in resources[]`];
}

/** The gateway's routes must point at declared resources and scopes, and never shadow each other. */
function checkGateway(c: ParsedConfig): string[] {
  const problems: string[] = [];
  const g = c.gateway;
  if (!g) return problems;
  if (g.listen.port !== 0 && g.listen.port === c.listen.port && g.listen.host === c.listen.host)
    problems.push('gateway.listen.port: must differ from listen.port (the gateway has its own listener)');
  const names = new Set<string>();
  const places = new Set<string>();
  g.routes.forEach((r, i) => {
    const at = `gateway.routes[${i}]`;
    const res = c.resources.find((x) => x.identifier === r.resource);
    if (!res) problems.push(`${at}.resource: "${r.resource}" is not an identifier in resources[]`);
    for (const [method, scopes] of Object.entries(r.scopes))
      for (const s of scopes)
        if (res && !res.scopes.includes(s))
          problems.push(`${at}.scopes.${method}: "${s}" is not a scope of resource ${r.resource}`);
    const name = r.name ?? `${r.host ?? ''}${r.path_prefix}`;
    if (names.has(name)) problems.push(`${at}.name: duplicate route name "${name}"`);
    names.add(name);
    const place = `${r.host ?? '*'} ${r.path_prefix.replace(/\/$/, '') || '/'}`;
    if (places.has(place)) problems.push(`${at}.path_prefix: another route has the same host and path_prefix`);
    places.add(place);
  });
  return problems;
}

/** Validates an already-parsed object. Throws ConfigError listing every problem. */
export function buildConfig(raw: unknown, baseDir = process.cwd()): Config {
  const problems: string[] = [];
  const substituted = substituteSecrets(raw ?? {}, [], problems, baseDir);
  if (problems.length) throw new ConfigError(problems);
  if (typeof substituted !== 'object' || Array.isArray(substituted))
    throw new ConfigError(['(root): the configuration must be a mapping of keys to values']);
  const parsed = configSchema.safeParse(substituted);
  if (!parsed.success) throw new ConfigError(formatZodIssues(parsed.error));
  const cross = checkCrossFields(parsed.data);
  if (cross.length) throw new ConfigError(cross);
  const c = parsed.data;
  const host = c.listen.host === '0.0.0.0' || c.listen.host === '::' ? 'localhost' : c.listen.host;
  const issuer = (c.issuer ?? `http://${host.includes(':') ? `[${host}]` : host}:${c.listen.port}`).replace(/\/$/, '');
  return deepFreeze({ ...c, issuer });
}

/** Reads a YAML or JSON file (YAML is a superset of JSON) and validates it. */
export function loadConfigFile(path: string): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError([`cannot read configuration file ${path} (${(e as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true });
  } catch (e) {
    throw new ConfigError([`${path}: not valid YAML/JSON: ${(e as Error).message.split('\n')[0]}`]);
  }
  return buildConfig(raw, resolve(path, '..'));
}

/** The effective resource identifiers a client may get tokens for: declared, or those defining its scopes. */
export function clientResources(
  config: Config,
  client: { scope: string; resources?: readonly string[] | undefined },
): string[] {
  if (client.resources) return [...client.resources];
  const scopes = new Set(client.scope.split(' ').filter(Boolean));
  return config.resources.filter((r) => r.scopes.some((s) => scopes.has(s))).map((r) => r.identifier);
}
