import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** base64url without padding (RFC 4648 §5). */
export function base64url(buf: Buffer | Uint8Array): string {
  return Buffer.from(buf).toString('base64url');
}

/** A random value with `bytes` bytes of entropy, base64url encoded. 32 bytes = 256 bits. */
export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

// Entropy is drawn in 4 KiB blocks: one getrandom call per 256 identifiers instead of one per identifier.
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** A random identifier (128 bits, base64url) for jti, request ids and correlation. */
export function randomId(): string {
  if (poolOffset + 16 > pool.length) {
    pool = randomBytes(4096);
    poolOffset = 0;
  }
  const id = pool.toString('base64url', poolOffset, poolOffset + 16);
  // Never hand out the same bytes twice.
  pool.fill(0, poolOffset, poolOffset + 16);
  poolOffset += 16;
  return id;
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
