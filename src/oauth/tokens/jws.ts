import { constants, type KeyObject, verify, type webcrypto } from 'node:crypto';

/** Verifies a compact JWS signature made with one of our signing algorithms (RFC 7518 §3). */
export function verifyCompactSignature(alg: string, key: KeyObject, data: Buffer, sig: Buffer): boolean {
  switch (alg) {
    case 'ES256':
      return verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
    case 'EdDSA':
      return verify(null, data, key, sig);
    case 'PS256':
      return verify('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, sig);
    case 'RS256':
      return verify('sha256', data, key, sig);
    default:
      return false;
  }
}

/** WebCrypto parameters per JWS alg (RFC 7518 §3). */
export function webCryptoAlgorithm(alg: string): {
  import: Parameters<import('node:crypto').KeyObject['toCryptoKey']>[0];
  sign: webcrypto.AlgorithmIdentifier | webcrypto.RsaPssParams | webcrypto.EcdsaParams;
} {
  switch (alg) {
    case 'ES256':
      return { import: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } };
    case 'EdDSA':
      return { import: { name: 'Ed25519' }, sign: { name: 'Ed25519' } };
    case 'PS256':
      return { import: { name: 'RSA-PSS', hash: 'SHA-256' }, sign: { name: 'RSA-PSS', saltLength: 32 } };
    case 'RS256':
      return { import: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, sign: { name: 'RSASSA-PKCS1-v1_5' } };
    default:
      throw new Error(`unsupported signing algorithm ${alg}`);
  }
}

/**
 * The same compact JWS, signed through WebCrypto: the signature is computed on libuv's thread pool, so the main
 * thread keeps parsing and answering requests meanwhile (issuance uses this; signing is most of its CPU).
 */
export async function signCompactAsync(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  alg: string,
  key: webcrypto.CryptoKey,
): Promise<string> {
  const input = `${Buffer.from(JSON.stringify(header)).toString('base64url')}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  const sig = await crypto.subtle.sign(webCryptoAlgorithm(alg).sign, key, Buffer.from(input));
  return `${input}.${Buffer.from(sig).toString('base64url')}`;
}
