import { hash as argonHash, verify as argonVerify } from '@node-rs/argon2';
import type { Config } from '../config/schema.ts';
import { checkNewPassword as checkAgainstPolicy, passwordMinLength } from '../lib/password-policy.ts';

/**
 * argon2id (the @node-rs/argon2 default algorithm) over the NFKC-normalised password, so the same password typed on
 * different keyboards or platforms verifies (NIST SP 800-63B-4 §3.1.1.2 asks for Unicode normalisation). argon2
 * hashes the whole input: unlike bcrypt there is no 72-byte truncation (test/account-protection.test.ts proves it).
 */
export function hashPassword(password: string): Promise<string> {
  return argonHash(password.normalize('NFKC'));
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  return argonVerify(hash, password.normalize('NFKC')).catch(() => false);
}

let dummy: Promise<string> | undefined;

/**
 * Spends the time of one verification when there is no user (or no password) to check, or the account is locked,
 * so every refusal answers in about the same time as a wrong password.
 */
export async function burnVerification(password: string): Promise<void> {
  dummy ??= hashPassword('portcullis-timing-equaliser');
  await verifyPassword(await dummy, password);
}

/**
 * The reason a new password for `username` is refused under this configuration (length by mfa.required, the
 * blocklist, the username and branding.name as context words), or undefined.
 */
export function checkNewPassword(config: Pick<Config, 'mfa' | 'branding'>, username: string, password: string) {
  return checkAgainstPolicy(password, {
    minLength: passwordMinLength(config.mfa.required),
    contextWords: [username, config.branding.name],
  });
}
