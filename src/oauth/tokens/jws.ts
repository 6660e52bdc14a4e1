import { constants, type KeyObject, sign } from 'node:crypto';

/**
 * Compact JWS signing with node:crypto directly (synchronous, no WebCrypto promise hop): issuance is the hot path.
 * Verification of incoming JWTs uses jose.
 */
export function signCompact(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  alg: string,
  key: KeyObject,
): string {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const data = Buffer.from(input);
  let sig: Buffer;
  switch (alg) {
    case 'ES256':
      sig = sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' });
      break;
    case 'EdDSA':
      sig = sign(null, data, key);
      break;
    case 'PS256':
      sig = sign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
      break;
    case 'RS256':
      sig = sign('sha256', data, key);
      break;
    default:
      throw new Error(`unsupported signing algorithm ${alg}`);
  }
  return `${input}.${sig.toString('base64url')}`;
}
