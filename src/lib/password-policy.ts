import { readFileSync } from 'node:fs';

/**
 * Password rules of NIST SP 800-63B-4 §3.1.1.2, applied whenever a password is set or changed (CLI, configuration
 * seeding, any change page):
 * - at least 15 characters when the password is the only factor, 8 when MFA is enforced;
 * - at least 64 accepted: Portcullis accepts up to 256;
 * - every printing character and space allowed, Unicode normalised (NFKC), counted in code points;
 * - no composition rules, no periodic change;
 * - refused when it is a commonly used or breached password, or built from context-specific words (the username,
 *   the service name), with the reason given to the person.
 * Pure: no storage, no framework. Configuration loading uses it too, so a seeded user with a bad password stops
 * start-up.
 */

export const MAX_PASSWORD_LENGTH = 256;

export interface PasswordContext {
  /** 15, or 8 when MFA is required (config mfa.required). */
  minLength: number;
  /** Words the password must not be built from: the username, the service name (branding.name). */
  contextWords: string[];
}

export function passwordMinLength(mfaRequired: boolean): number {
  return mfaRequired ? 8 : 15;
}

let blocklist: Set<string> | undefined;

/** The shipped list (src/lib/data/common-passwords.txt, see scripts/gen-password-blocklist.ts), loaded once. */
export function commonPasswords(): Set<string> {
  blocklist ??= new Set(
    readFileSync(new URL('./data/common-passwords.txt', import.meta.url), 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#')),
  );
  return blocklist;
}

/** Letters and digits only, lower-cased: "Port Cullis!" and "portcullis" are the same word here. */
function squash(s: string): string {
  return s
    .normalize('NFKC')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}]/gu, '');
}

/** Code points, so an emoji or an accented letter counts as one character (§3.1.1.2). */
export function passwordLength(password: string): number {
  return [...password.normalize('NFKC')].length;
}

/** The reason a new password is refused, or undefined when it is acceptable. */
export function checkNewPassword(password: string, ctx: PasswordContext): string | undefined {
  const length = passwordLength(password);
  if (length < ctx.minLength) return `the password must be at least ${ctx.minLength} characters (it has ${length})`;
  if (length > MAX_PASSWORD_LENGTH) return `the password must be at most ${MAX_PASSWORD_LENGTH} characters`;
  const lower = password.normalize('NFKC').toLowerCase();
  const list = commonPasswords();
  if (list.has(lower) || list.has(lower.replace(/\s+/g, '')) || list.has(squash(password)))
    return 'the password is on a list of common or breached passwords: choose another';
  const squashed = squash(password);
  if (squashed.length > 0 && new Set(squashed).size === 1) return 'the password repeats one character: choose another';
  for (const word of ctx.contextWords) {
    const w = squash(word);
    if (w.length < 3) continue;
    // What is left once the word (and digits, the usual suffix) is taken out must be a password of its own.
    const rest = squashed.split(w).join('').replace(/\p{N}/gu, '');
    if (squashed.includes(w) && rest.length < 8)
      return `the password is too close to "${word}" (the username or the service name): choose another`;
  }
  return undefined;
}
