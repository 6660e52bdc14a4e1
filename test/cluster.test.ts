/**
 * Two Portcullis nodes on one PostgreSQL database (the design's "many stateless nodes"): whatever one node does,
 * the other must honour. Skipped loudly without PORTCULLIS_TEST_POSTGRES_URL.
 */
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  API,
  baseConfig,
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
  randomKek,
  startServer,
  type TestDatabase,
} from './helpers/server.ts';

const available = postgresAvailable('cluster.test.ts');
const d = available ? describe : describe.skip;

d(
  `two nodes on one PostgreSQL database${available ? '' : ' (SKIPPED: PORTCULLIS_TEST_POSTGRES_URL is not set)'}`,
  () => {
    let db: TestDatabase;
    let a: RunningServer;
    let b: RunningServer;
    const base = baseConfig();
    const { svc, apiRs } = base.clients;
    const ISSUER = 'https://auth.example.test';
    let privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];

    beforeAll(async () => {
      db = await createPostgresDatabase(POSTGRES_URL);
      const pair = await generateKeyPair('ES256');
      privateKey = pair.privateKey;
      (base.config.clients as unknown[]).push({
        client_id: 'pkjwt',
        token_endpoint_auth_method: 'private_key_jwt',
        scope: 'orders:read',
        jwks: { keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' }] },
      });
      // One issuer (the load balancer's URL) and one KEK for every node.
      const config = { ...base.config, issuer: ISSUER, keys: { jwks_max_age: '60s' } };
      const env = { PORTCULLIS_KEK: randomKek() };
      a = await startServer(config, { storageUrl: db.url, env });
      b = await startServer(config, { storageUrl: db.url, env });
    });
    afterAll(async () => {
      await a?.close();
      await b?.close();
      await db?.drop();
    });

    it('both nodes publish the same keys and sign with the same kid', async () => {
      const ka = await jwksKids(a);
      expect(ka).toHaveLength(1);
      expect(await jwksKids(b)).toEqual(ka);
      expect(kidOf((await getToken(b, svc)).access_token)).toBe(ka[0]);
    });

    it('a token from node A introspects active on node B and verifies with B’s JWKS', async () => {
      const t = (await getToken(a, svc)).access_token;
      expect((await introspect(b, apiRs, t)).json?.active).toBe(true);
      await verifyAccessToken(b, t, { audience: API });
    });

    it('a revocation on node A is honoured by node B', async () => {
      const t = (await getToken(a, svc)).access_token;
      expect((await introspect(b, svc, t)).json?.active).toBe(true);
      expect((await revoke(a, svc, t)).status).toBe(200);
      expect(JSON.parse((await introspect(b, svc, t)).text)).toStrictEqual({ active: false });
    });

    it('a client assertion used on node A is a replay on node B', async () => {
      const now = Math.floor(Date.now() / 1000);
      const jwt = await new SignJWT({ jti: randomUUID() })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuer('pkjwt')
        .setSubject('pkjwt')
        .setAudience(ISSUER)
        .setIssuedAt(now)
        .setExpirationTime(now + 60)
        .sign(privateKey);
      const body = {
        grant_type: 'client_credentials',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: jwt,
      };
      const first = await postForm(`${a.url}/token`, body);
      expect(first.status, first.text).toBe(200);
      const second = await postForm(`${b.url}/token`, body);
      expect(second.status, second.text).toBe(401);
      expect(second.json?.error).toBe('invalid_client');
    });

    it('an emergency rotation (cli) reaches both nodes', async () => {
      const [kid1] = await jwksKids(a);
      const old = (await getToken(b, svc)).access_token;
      const r = await a.cli(['keys', 'rotate', '--emergency', '--reason', 'cluster test']);
      expect(r.code, r.stderr).toBe(0);
      for (const node of [a, b]) {
        const t = (await getToken(node, svc)).access_token;
        expect(kidOf(t)).not.toBe(kid1);
        expect(await jwksKids(node)).not.toContain(kid1);
        expect(JSON.parse((await introspect(node, svc, old)).text)).toStrictEqual({ active: false });
      }
    });
  },
);
