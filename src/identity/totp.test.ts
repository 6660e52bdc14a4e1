import { describe, expect, it } from 'vitest';
import { base32Decode, base32Encode, hotp, matchTotp, totpAt } from './totp.ts';

// RFC 6238 Appendix B: the SHA-1 secret is the ASCII string "12345678901234567890"; 8-digit values end in these 6.
const SECRET = base32Encode(Buffer.from('12345678901234567890'));

describe('TOTP (RFC 6238)', () => {
  it('matches the RFC 6238 Appendix B SHA-1 test vectors (last 6 digits)', () => {
    expect(totpAt(SECRET, 59_000)).toBe('287082');
    expect(totpAt(SECRET, 1111111109_000)).toBe('081804');
    expect(totpAt(SECRET, 1234567890_000)).toBe('005924');
    expect(totpAt(SECRET, 2000000000_000)).toBe('279037');
  });
  it('matches the RFC 4226 Appendix D HOTP values', () => {
    expect(hotp(Buffer.from('12345678901234567890'), 0)).toBe('755224');
    expect(hotp(Buffer.from('12345678901234567890'), 9)).toBe('520489');
  });
  it('base32 round-trips', () => {
    const b = Buffer.from([0, 1, 2, 250, 251, 252, 253, 254, 255, 7]);
    expect(base32Decode(base32Encode(b))).toEqual(b);
    expect(base32Encode(Buffer.from('foobar'))).toBe('MZXW6YTBOI');
  });
  it('accepts one step either side and no further', () => {
    const t = 1_700_000_000_000;
    const step = Math.floor(t / 30_000);
    expect(matchTotp(SECRET, totpAt(SECRET, t), t)).toBe(step);
    expect(matchTotp(SECRET, totpAt(SECRET, t - 30_000), t)).toBe(step - 1);
    expect(matchTotp(SECRET, totpAt(SECRET, t + 30_000), t)).toBe(step + 1);
    expect(matchTotp(SECRET, totpAt(SECRET, t - 60_000), t)).toBeUndefined();
    expect(matchTotp(SECRET, totpAt(SECRET, t + 60_000), t)).toBeUndefined();
    expect(matchTotp(SECRET, '12345', t)).toBeUndefined();
  });
});
