import { timingSafeEqual } from 'node:crypto';
import { sha256 } from '../../lib/crypto.ts';
import type { ClientRecord } from '../../storage/ports.ts';

/** Client secrets are >= 128-bit random values, so one SHA-256 is the right hash (no stretching needed). */
export function hashClientSecret(secret: string): string {
  return sha256(secret).toString('hex');
}

export function verifyClientSecret(client: ClientRecord, presented: string): boolean {
  if (!client.secret_hash) return false;
  const expected = Buffer.from(client.secret_hash, 'hex');
  const actual = sha256(presented);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/**
 * RFC 6749 §2.3.1: client_id and secret are form-urlencoded before Basic encoding. Returns undefined when the
 * header is not well-formed Basic credentials.
 */
export function parseBasic(header: string): { clientId: string; secret: string } | undefined {
  const m = /^Basic[ ]+([A-Za-z0-9+/=._~-]+)\s*$/i.exec(header);
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i <= 0) return undefined;
  try {
    const clientId = decodeURIComponent(decoded.slice(0, i).replace(/\+/g, ' '));
    const secret = decodeURIComponent(decoded.slice(i + 1).replace(/\+/g, ' '));
    return clientId ? { clientId, secret } : undefined;
  } catch {
    return undefined;
  }
}
