/** The admin API's guard: only this server's unexpired, unrevoked bearer tokens for admin.resource with the scope. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN, adminGet, adminToken, withAdmin } from './helpers/admin.ts';
import { API, baseConfig, getToken, revoke } from './helpers/oauth.ts';
import { type RunningServer, startServer } from './helpers/server.ts';

describe('admin API', () => {
  let server: RunningServer;
  let off: RunningServer;
  const base = baseConfig();
  const { config, ops } = withAdmin(base.config);
  (config.resources as Array<{ identifier: string; scopes: string[] }>)
    .find((r) => r.identifier === ADMIN)
    ?.scopes.push('audit:other');
  (config.clients as Array<Record<string, unknown>>).push({
    client_id: 'ops-narrow',
    client_secret: ops.client_secret,
    scope: 'audit:other',
    resources: [ADMIN],
  });
  beforeAll(async () => {
    [server, off] = await Promise.all([startServer(config), startServer(base.config)]);
  });
  afterAll(async () => {
    await Promise.all([server?.close(), off?.close()]);
  });

  it('answers with the latest signed checkpoint and the verifier key to an operator token', async () => {
    await server.cli(['audit', 'seal']);
    const r = await adminGet(server, '/admin/audit/checkpoint', await adminToken(server, ops));
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const cp = r.json.checkpoint as { tree_size: number; note: string };
    expect(cp.tree_size).toBeGreaterThan(0);
    const keys = r.json.verifier_keys as Array<{ verifier_key: string }>;
    expect(keys).toHaveLength(1);
    expect(keys[0]?.verifier_key).toBe((await server.cli(['audit', 'key'])).stdout.trim());
  });

  it('refuses a missing, foreign-audience, under-scoped, revoked or garbage token (RFC 6750)', async () => {
    const none = await fetch(`${server.url}/admin/audit/checkpoint`);
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/^Bearer/);
    const apiToken = (await getToken(server, base.clients.svc, { resource: API })).access_token;
    expect((await adminGet(server, '/admin/audit/checkpoint', apiToken)).status).toBe(401);
    const narrow = (
      await getToken(server, { client_id: 'ops-narrow', client_secret: ops.client_secret }, { resource: ADMIN })
    ).access_token;
    const n = await adminGet(server, '/admin/audit/checkpoint', narrow);
    expect(n.status).toBe(403);
    expect(n.json.error).toBe('insufficient_scope');
    const t = await adminToken(server, ops);
    expect((await revoke(server, ops, t)).status).toBe(200);
    expect((await adminGet(server, '/admin/audit/checkpoint', t)).status).toBe(401);
    expect((await adminGet(server, '/admin/audit/checkpoint', 'e30.e30.AAAA')).status).toBe(401);
  });

  it('is off (404 naming admin.resource) unless configured', async () => {
    const t = (await getToken(off, base.clients.svc)).access_token;
    const r = await adminGet(off, '/admin/audit/checkpoint', t);
    expect(r.status).toBe(404);
    expect(String(r.json.error_description)).toMatch(/admin\.resource/);
  });
});
