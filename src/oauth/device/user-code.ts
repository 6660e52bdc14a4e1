import { randomInt } from 'node:crypto';

/**
 * RFC 8628 §6.1: user codes from 20 consonants (no vowels: no words; no look-alikes such as 0/O, 1/I). Eight
 * characters give 20^8 ≈ 2^34.6 codes; with a few guesses allowed per IP and session over a device code's
 * ten-minute life, guessing a live one is hopeless.
 */
export const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';

export function newUserCode(): string {
  let out = '';
  for (let i = 0; i < 8; i++) out += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  return out;
}

/** As typed: case-insensitive, dashes and spaces ignored. Undefined when it cannot be a user code at all. */
export function normalizeUserCode(input: string): string | undefined {
  const v = input.toUpperCase().replace(/[-\s]/g, '');
  if (v.length !== 8) return undefined;
  for (const c of v) if (!USER_CODE_ALPHABET.includes(c)) return undefined;
  return v;
}

/** XXXX-XXXX, the form shown to people. */
export function formatUserCode(code: string): string {
  return `${code.slice(0, 4)}-${code.slice(4)}`;
}
