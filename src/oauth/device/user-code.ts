import { randomInt } from 'node:crypto';

/**
 * RFC 8628 §6.1: the user code is typed by a person, so it uses an alphabet without vowels (no words spelled by
 * accident) and without digits or letters that look alike, is case-insensitive and ignores punctuation. 20 letters,
 * 8 characters: 20^8 ≈ 2.6e10 codes, about 34 bits, which §5.1 deems enough when wrong guesses are throttled
 * and codes are short-lived.
 */
export const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';
export const USER_CODE_LENGTH = 8;

const SHAPE = new RegExp(`^[${USER_CODE_ALPHABET}]{${USER_CODE_LENGTH}}$`);

/** A new user code in its stored form (upper case, no dash). randomInt draws without modulo bias. */
export function generateUserCode(): string {
  let out = '';
  for (let i = 0; i < USER_CODE_LENGTH; i++) out += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  return out;
}

/**
 * What the person typed, in the stored form: case folded, dashes and white space dropped (RFC 8628 §6.1).
 * Undefined when the result cannot be a user code at all.
 */
export function normaliseUserCode(input: string | undefined): string | undefined {
  if (input === undefined || input.length > 64) return undefined;
  const v = input
    .normalize('NFKC')
    .toUpperCase()
    .replace(/[\s\-\u2010-\u2015]/g, '');
  return SHAPE.test(v) ? v : undefined;
}

/** The display form, XXXX-XXXX: easier to read aloud and to compare with the device's screen. */
export function formatUserCode(code: string): string {
  return `${code.slice(0, 4)}-${code.slice(4)}`;
}
