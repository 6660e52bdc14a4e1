/** An independent RFC 6238 code generator for tests (SHA-1, 30 s, 6 digits), from the server's fake time. */
import { createHmac } from 'node:crypto';
import type { RunningServer } from './server.ts';

function fromBase32(s: string): Buffer {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of s.replace(/[\s=]/g, '').toUpperCase()) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const bytes: number[] = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(Number.parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

export function totpCode(secret: string, nowMs: number, stepOffset = 0): string {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(nowMs / 30_000) + stepOffset));
  const mac = createHmac('sha1', fromBase32(secret)).update(counter).digest();
  const o = mac[19]! & 0xf;
  return String((mac.readUInt32BE(o) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

/** The server's current time (the fake clock moved by nothing). */
export async function serverNow(server: RunningServer): Promise<number> {
  return (await server.advanceClock(0)).now_ms;
}

/** A 6-digit code that is none of the codes valid around now (for wrong-code tests). */
export function wrongCode(secret: string, nowMs: number): string {
  const valid = new Set([-2, -1, 0, 1, 2].map((d) => totpCode(secret, nowMs, d)));
  for (let n = 123456; ; n = (n + 1) % 1_000_000) {
    const c = String(n).padStart(6, '0');
    if (!valid.has(c)) return c;
  }
}
