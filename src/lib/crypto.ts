import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** base64url without padding (RFC 4648 §5). */
export function base64url(buf: Buffer | Uint8Array): string {
  return Buffer.from(buf).toString('base64url');
}

/** A random value with `bytes` bytes of entropy, base64url encoded. 32 bytes = 256 bits. */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** A short random identifier (128 bits) for jti, event correlation and key ids. */
export function randomId(): string {
  return randomBytes(16).toString('base64url');
}

export function sha256(input: string | Buffer): Buffer {
  return createHash('sha256').update(input).digest();
}

export function sha256Hex(input: string | Buffer): string {
  return createHash('sha256').update(input).digest('hex');
}

/** Constant-time comparison of two strings; different lengths compare false without early exit on content. */
export function constantTimeEqual(a: string, b: string): boolean {
  const ab = sha256(a);
  const bb = sha256(b);
  return timingSafeEqual(ab, bb) && a.length === b.length;
}
