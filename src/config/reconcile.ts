import { hash as argonHash, verify as argonVerify } from '@node-rs/argon2';
import type { SecurityEvent } from '../events/catalogue.ts';
import type { Clock } from '../lib/clock.ts';
import { randomId, sha256Hex } from '../lib/crypto.ts';
import { hashClientSecret } from '../oauth/client-auth/client-secret.ts';
import { revokeUserGrants } from '../oauth/grant-revocation.ts';
import type { ClientRecord, Storage, UserRecord } from '../storage/ports.ts';
import { clientResources } from './load.ts';
import type { Config } from './schema.ts';

function sameClient(a: ClientRecord, b: ClientRecord): boolean {
  const strip = (c: ClientRecord) => ({ ...c, created_at: 0, updated_at: 0 });
  return JSON.stringify(strip(a)) === JSON.stringify(strip(b));
}

/**
 * Makes storage match the clients and users declared in the file, in one transaction with one event per change
 * and a config.applied event. Config-declared clients removed from the file are deleted; clients created by the
 * CLI or the demo are left alone. Secrets are stored hashed.
 */
export async function reconcileConfig(
  storage: Storage,
  config: Config,
  clock: Clock,
  fingerprint: string,
): Promise<{ changes: string[] }> {
  const now = clock.nowMs();
  const existingUsers = new Map((await storage.users.list()).map((u) => [u.username, u]));
  // Password hashing is slow by design: do it before the transaction, and only when the stored hash differs.
  const userRows: Array<
    UserRecord & { changed: boolean; isNew: boolean; disabling: boolean; passwordChanged: boolean }
  > = [];
  for (const u of config.users) {
    const prev = existingUsers.get(u.username);
    // A user changed through the CLI (disabled, new password) is the CLI's from then on: a restart must not
    // silently re-enable an account an administrator disabled.
    if (prev?.source === 'cli') continue;
    let passwordHash = prev?.password_hash ?? null;
    if (
      u.password !== undefined &&
      !(passwordHash && (await argonVerify(passwordHash, u.password.normalize('NFKC')).catch(() => false)))
    )
      passwordHash = await argonHash(u.password.normalize('NFKC'));
    if (u.password === undefined) passwordHash = prev?.password_hash ?? null;
    userRows.push({
      id: prev?.id ?? randomId(),
      username: u.username,
      password_hash: passwordHash,
      email: u.email ?? null,
      name: u.name ?? null,
      disabled: u.disabled,
      source: 'config',
      created_at: prev?.created_at ?? now,
      updated_at: now,
      changed:
        !prev ||
        prev.password_hash !== passwordHash ||
        prev.email !== (u.email ?? null) ||
        prev.name !== (u.name ?? null) ||
        prev.disabled !== u.disabled,
      isNew: !prev,
      disabling: !!prev && !prev.disabled && u.disabled,
      passwordChanged: !!prev && prev.password_hash !== passwordHash,
    });
  }
  return storage.withTransaction(async (tx) => {
    const changes: string[] = [];
    const events: SecurityEvent[] = [];
    const existing = new Map((await tx.clients.list()).map((c) => [c.client_id, c]));
    const declared = new Set<string>();
    for (const c of config.clients) {
      declared.add(c.client_id);
      const prev = existing.get(c.client_id);
      const rec: ClientRecord = {
        client_id: c.client_id,
        client_name: c.client_name ?? null,
        secret_hash: c.client_secret ? hashClientSecret(c.client_secret) : null,
        token_endpoint_auth_method: c.token_endpoint_auth_method,
        token_endpoint_auth_signing_alg: c.token_endpoint_auth_signing_alg ?? null,
        grant_types: [...c.grant_types],
        redirect_uris: [...c.redirect_uris],
        scope: c.scope,
        resources: clientResources(config, c),
        jwks: c.jwks ? (JSON.parse(JSON.stringify(c.jwks)) as ClientRecord['jwks']) : null,
        jwks_uri: c.jwks_uri ?? null,
        disabled: c.disabled,
        post_logout_redirect_uris: [...c.post_logout_redirect_uris],
        require_pushed_authorization_requests: c.require_pushed_authorization_requests,
        metadata: Object.fromEntries(
          (['logo_uri', 'client_uri', 'policy_uri', 'tos_uri'] as const)
            .filter((k) => c[k] !== undefined)
            .map((k) => [k, c[k]] as [string, unknown])
            .concat([
              ['refresh_token_requires_offline_access', c.refresh_token_requires_offline_access],
              ['require_mfa', c.require_mfa],
              ['dpop_bound_access_tokens', c.dpop_bound_access_tokens],
            ]),
        ),
        source: 'config',
        created_at: prev?.created_at ?? now,
        updated_at: now,
      };
      if (prev && sameClient(prev, rec)) continue;
      await tx.clients.upsert(rec);
      changes.push(`${prev ? 'updated' : 'created'} client ${c.client_id}`);
      events.push({
        type: prev ? 'client.updated' : 'client.created',
        at: now,
        client_id: c.client_id,
        actor: 'config',
        data: {
          auth_method: rec.token_endpoint_auth_method,
          grant_types: rec.grant_types,
          scope: rec.scope,
          resources: rec.resources,
          secret_changed: prev ? prev.secret_hash !== rec.secret_hash : undefined,
        },
      });
    }
    for (const [id, c] of existing) {
      if (c.source === 'config' && !declared.has(id)) {
        await tx.clients.delete(id);
        changes.push(`deleted client ${id}`);
        events.push({
          type: 'client.deleted',
          at: now,
          client_id: id,
          actor: 'config',
          data: { reason: 'removed from the configuration file' },
        });
      }
    }
    for (const { changed, isNew, disabling, passwordChanged, ...u } of userRows) {
      if (!changed) continue;
      await tx.users.upsert(u);
      if (disabling) {
        // Disabling in the file has the same effect as `portcullis users disable`: sessions end, grants die.
        for (const sid of await tx.sessions.endByUser(u.id, now, 'user_disabled'))
          events.push({
            type: 'session.ended',
            at: now,
            subject: u.id,
            session_id: sid,
            actor: 'config',
            data: { sid, reason: 'user_disabled' },
          });
        const ttl = Math.max(config.tokens.access_token_ttl, ...config.resources.map((r) => r.access_token_ttl ?? 0));
        await revokeUserGrants(tx, u.id, {
          at: now,
          reason: 'user_disabled',
          actor: 'config',
          expiresAt: now + (ttl + config.tokens.clock_skew) * 1000,
        });
      }
      if (!isNew && passwordChanged)
        events.push({
          type: 'password.changed',
          at: now,
          subject: u.id,
          actor: 'config',
          data: { username: u.username, by: 'config' },
        });
      changes.push(`${isNew ? 'created' : 'updated'} user ${u.username}`);
      events.push({
        type: isNew ? 'user.created' : 'user.updated',
        at: now,
        subject: u.id,
        actor: 'config',
        data: { username: u.username },
      });
    }
    for (const e of events) await tx.events.append(e);
    const prevFingerprint = await tx.meta.get('config_fingerprint');
    if (prevFingerprint !== fingerprint || changes.length) {
      await tx.meta.set('config_fingerprint', fingerprint);
      await tx.events.append({ type: 'config.applied', at: now, actor: 'config', data: { fingerprint, changes } });
    }
    return { changes };
  });
}

/** A fingerprint of the effective configuration with secrets removed (so the event can be shown to auditors). */
export function configFingerprint(config: Config): string {
  const redacted = JSON.stringify(config, (k, v) =>
    k === 'client_secret' || k === 'password' || k === 'totp_secret' ? sha256Hex(String(v)).slice(0, 12) : v,
  );
  return sha256Hex(redacted);
}
