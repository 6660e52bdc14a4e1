import { hash as argonHash, verify as argonVerify } from '@node-rs/argon2';

/**
 * argon2id (the @node-rs/argon2 default algorithm) over the NFKC-normalised password, so the same password typed on
 * different keyboards or platforms verifies (NIST SP 800-63B §5.1.1.2 asks for Unicode normalisation).
 */
export function hashPassword(password: string): Promise<string> {
  return argonHash(password.normalize('NFKC'));
}

export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  return argonVerify(hash, password.normalize('NFKC')).catch(() => false);
}

let dummy: Promise<string> | undefined;

/**
 * Spends the time of one verification when there is no user (or no password) to check, so an unknown username
 * answers in about the same time as a wrong password.
 */
export async function burnVerification(password: string): Promise<void> {
  dummy ??= hashPassword('portcullis-timing-equaliser');
  await verifyPassword(await dummy, password);
}

/** The minimum is deliberately small here; the account-protection issue brings the NIST 800-63B rules. */
export function checkNewPassword(password: string): string | undefined {
  if (password.normalize('NFKC').length < 8) return 'the password must be at least 8 characters';
  if (password.length > 1024) return 'the password must be at most 1024 characters';
  return undefined;
}
