import { constants, type KeyObject, type SignKeyObjectInput, verify } from 'node:crypto';

/** node:crypto digest and key options for each JWS algorithm we sign with (RFC 7518 §3). */
export function signatureOptions(alg: string): {
  digest: string | null;
  options: Omit<SignKeyObjectInput, 'key'>;
} {
  switch (alg) {
    case 'ES256':
      // JWS wants the raw r||s form (RFC 7518 §3.4), not DER.
      return { digest: 'sha256', options: { dsaEncoding: 'ieee-p1363' } };
    case 'EdDSA':
      return { digest: null, options: {} };
    case 'PS256':
      return { digest: 'sha256', options: { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } };
    case 'RS256':
      return { digest: 'sha256', options: {} };
    default:
      throw new Error(`unsupported signing algorithm ${alg}`);
  }
}

/** Verifies a compact JWS signature made with one of our signing algorithms. */
export function verifyCompactSignature(alg: string, key: KeyObject, data: Buffer, sig: Buffer): boolean {
  let o: ReturnType<typeof signatureOptions>;
  try {
    o = signatureOptions(alg);
  } catch {
    return false;
  }
  return verify(o.digest, data, { key, ...o.options }, sig);
}

/** base64url(JSON) of a JOSE header or claims set. */
export function encodeSegment(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}
