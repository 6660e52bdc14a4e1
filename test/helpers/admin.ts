/** The admin API from a test: an operator client `ops` granted the admin resource, and a GET with its token. */
import { getToken, secret, type TestClient } from './oauth.ts';
import type { ConfigObject, RunningServer } from './server.ts';

export const ADMIN = 'https://admin.portcullis.test';

/** Adds the admin resource (scope audit:read), turns the admin API on, and adds the operator client. */
export function withAdmin(config: ConfigObject): { config: ConfigObject; ops: TestClient } {
  const ops: TestClient = { client_id: 'ops', client_secret: secret() };
  return {
    ops,
    config: {
      ...config,
      admin: { resource: ADMIN },
      resources: [...((config.resources as unknown[]) ?? []), { identifier: ADMIN, scopes: ['audit:read'] }],
      clients: [
        ...((config.clients as unknown[]) ?? []),
        { client_id: 'ops', client_secret: ops.client_secret, scope: 'audit:read', resources: [ADMIN] },
      ],
    },
  };
}

export async function adminToken(server: RunningServer, ops: TestClient): Promise<string> {
  return (await getToken(server, ops, { resource: ADMIN, scope: 'audit:read' })).access_token;
}

export async function adminGet(
  server: RunningServer,
  path: string,
  token: string,
): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const r = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: r.status, json: (await r.json()) as Record<string, unknown>, headers: r.headers };
}
