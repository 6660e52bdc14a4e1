/**
 * Signs a JWT with the running server's active signing key (read from its database, decrypted with its KEK file),
 * to stand in for an ID token where a test needs one before or apart from the token endpoint (id_token_hint).
 */
import { join } from 'node:path';
import { importJWK, SignJWT } from 'jose';
import { loadKek } from '../../src/keys/kek.ts';
import { query } from './db.ts';
import type { RunningServer } from './server.ts';

export async function signAsServer(
  server: RunningServer,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = { typ: 'JWT' },
): Promise<string> {
  const [row] = await query<{ kid: string; alg: string; private_enc: string }>(
    server,
    "SELECT kid, alg, private_enc FROM signing_keys WHERE state = 'active'",
  );
  if (!row) throw new Error('no active signing key');
  const kek = loadKek(join(server.dir, 'kek'), { create: false });
  const jwk = JSON.parse(kek.decrypt(row.private_enc, row.kid));
  const key = await importJWK(jwk, row.alg);
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iat: now, exp: now + 600, iss: server.issuer, ...claims })
    .setProtectedHeader({ ...header, alg: row.alg, kid: row.kid })
    .sign(key);
}
