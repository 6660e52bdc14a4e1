import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEvents } from './helpers/db.ts';
import {
  API,
  baseConfig,
  claimsOf,
  getToken,
  introspect,
  jwksKids,
  kidOf,
  postForm,
  revoke,
  verifyAccessToken,
} from './helpers/oauth.ts';
import {
  createPostgresDatabase,
  POSTGRES_URL,
  postgresAvailable,
  type RunningServer,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';

const backends: Array<['sqlite' | 'postgres', boolean]> = [
  ['sqlite', true],
  ['postgres', postgresAvailable('restart.test.ts')],
];

describe.each(backends)('restart on %s', (backend, available) => {
  const d = available ? describe : describe.skip;
  d(
    `state survives a restart (${backend})${available ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`,
    () => {
      let server: RunningServer;
      let db: TestDatabase | undefined;
      const base = baseConfig();
      const { svc, apiRs } = base.clients;
      let kept: string;
      let revoked: string;
      let cliRevoked: string;
      let kidsBefore: string[];
      let eventsBefore: Awaited<ReturnType<typeof readEvents>>;
      let clientsBefore: string[];

      const assertionJti = randomUUID();
      let signAssertion: (aud: string) => Promise<string>;

      beforeAll(async () => {
        const { privateKey, publicKey } = await generateKeyPair('ES256');
        (base.config.clients as unknown[]).push({
          client_id: 'pkjwt',
          token_endpoint_auth_method: 'private_key_jwt',
          scope: 'orders:read',
          jwks: { keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] },
        });
        // Same jti every time: the second use, even after a restart, is a replay.
        signAssertion = async (aud: string) => {
          const now = Math.floor(Date.now() / 1000);
          return new SignJWT({ jti: assertionJti })
            .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
            .setIssuer('pkjwt')
            .setSubject('pkjwt')
            .setIssuedAt(now)
            .setExpirationTime(now + 240)
            .setAudience(aud)
            .sign(privateKey);
        };
        if (backend === 'postgres') db = await createPostgresDatabase(POSTGRES_URL);
        server = await startServer(base.config, db ? { storageUrl: db.url } : {});
      });
      afterAll(async () => {
        await server?.close();
        await db?.drop();
      });

      it('before restart: tokens, a revocation (endpoint and cli), keys, clients, events', async () => {
        kept = (await getToken(server, svc)).access_token;
        revoked = (await getToken(server, svc)).access_token;
        cliRevoked = (await getToken(server, svc)).access_token;
        expect((await revoke(server, svc, revoked)).status).toBe(200);
        expect(JSON.parse((await introspect(server, svc, revoked)).text)).toStrictEqual({ active: false });

        const r = await server.cli(['revoke', '--jti', String(claimsOf(cliRevoked).jti), '--reason', 'test']);
        expect(r.code, r.stderr).toBe(0);
        expect(JSON.parse((await introspect(server, svc, cliRevoked)).text)).toStrictEqual({ active: false });

        const first = await postForm(`${server.url}/token`, {
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: await signAssertion(server.issuer),
        });
        expect(first.status, first.text).toBe(200);

        kidsBefore = await jwksKids(server);
        expect(kidsBefore.length).toBeGreaterThan(0);
        const cl = await server.cli(['clients', 'list', '--json']);
        expect(cl.code, cl.stderr).toBe(0);
        clientsBefore = (JSON.parse(cl.stdout) as Array<{ client_id: string }>).map((c) => c.client_id).sort();
        expect(clientsBefore).toEqual(expect.arrayContaining(['svc', 'api-rs', 'multi']));
        expect(cl.stdout).not.toContain(svc.client_secret);
        eventsBefore = await readEvents(server);
        expect(eventsBefore.some((e) => e.type === 'token.issued' && e.jti === claimsOf(kept).jti)).toBe(true);
      });

      it('restart: SIGTERM exits 0 and the server comes back', async () => {
        await server.restart();
        expect(server.running).toBe(true);
      });

      it('keeps the signing keys (same kids in the JWKS, new tokens signed by the same key)', async () => {
        expect((await jwksKids(server)).sort()).toEqual([...kidsBefore].sort());
        const fresh = await getToken(server, svc);
        expect(kidsBefore).toContain(kidOf(fresh.access_token));
        await verifyAccessToken(server, kept, { audience: API });
      });

      it('tokens issued before the restart still introspect active', async () => {
        expect((await introspect(server, svc, kept)).json?.active).toBe(true);
        expect((await introspect(server, apiRs, kept)).json?.active).toBe(true);
      });

      it('keeps revocations', async () => {
        expect(JSON.parse((await introspect(server, svc, revoked)).text)).toStrictEqual({ active: false });
        expect(JSON.parse((await introspect(server, svc, cliRevoked)).text)).toStrictEqual({ active: false });
      });

      it('keeps used client-assertion jtis (a replay after restart is refused)', async () => {
        const replay = await postForm(`${server.url}/token`, {
          grant_type: 'client_credentials',
          client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
          client_assertion: await signAssertion(server.issuer),
        });
        expect(replay.status, replay.text).toBe(401);
        expect(replay.json?.error).toBe('invalid_client');
      });

      it('keeps clients', async () => {
        const cl = await server.cli(['clients', 'list', '--json']);
        expect(cl.code, cl.stderr).toBe(0);
        expect((JSON.parse(cl.stdout) as Array<{ client_id: string }>).map((c) => c.client_id).sort()).toEqual(
          clientsBefore,
        );
        await getToken(server, base.clients.multi, { resource: API });
      });

      it('keeps events (every earlier row unchanged; new ids larger)', async () => {
        const after = await readEvents(server);
        expect(after.slice(0, eventsBefore.length)).toEqual(eventsBefore);
        const maxBefore = Math.max(...eventsBefore.map((e) => e.id));
        const newer = after.slice(eventsBefore.length);
        expect(newer.length).toBeGreaterThan(0); // at least the tokens issued after restart
        for (const e of newer) expect(e.id).toBeGreaterThan(maxBefore);
      });
    },
  );
});
