import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { ConfigError } from '../errors/oauth-error.ts';

/**
 * The key-encryption key (KEK): 32 bytes that encrypt every private signing key at rest with AES-256-GCM.
 * Source, in order: PORTCULLIS_KEK (base64, base64url or hex of 32 bytes), else keys.kek_file, created with mode
 * 0600 when absent. Losing the KEK means losing the signing keys (tokens then need a fresh key); keep it backed up
 * separately from the database, which is the point.
 */
export class Kek {
  private readonly key: Buffer;
  readonly source: string;
  constructor(key: Buffer, source: string) {
    this.key = key;
    this.source = source;
  }

  encrypt(plaintext: string, aad: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    c.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([c.update(plaintext, 'utf8'), c.final()]);
    return ['v1', iv.toString('base64url'), ct.toString('base64url'), c.getAuthTag().toString('base64url')].join('.');
  }

  /**
   * A 32-byte key for one purpose (HMAC-SHA256 of the label under the KEK): every node sharing the KEK derives the
   * same one, and knowing it reveals nothing about the KEK or other purposes' keys. Used for the stateless DPoP
   * nonces (oauth/dpop.ts).
   */
  deriveKey(label: string): Buffer {
    return createHmac('sha256', this.key).update(`portcullis derived key: ${label}`).digest();
  }

  /** Throws when the ciphertext was not made under this KEK (or was altered). */
  decrypt(blob: string, aad: string): string {
    const [v, iv, ct, tag] = blob.split('.');
    if (v !== 'v1' || !iv || !ct || !tag) throw new Error('unknown key encryption format');
    const d = createDecipheriv('aes-256-gcm', this.key, Buffer.from(iv, 'base64url'));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([d.update(Buffer.from(ct, 'base64url')), d.final()]).toString('utf8');
  }
}

function decodeKek(text: string, where: string): Buffer {
  const t = text.trim();
  const candidates = [
    /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : undefined,
    Buffer.from(t, 'base64url'),
    Buffer.from(t, 'base64'),
  ];
  const k = candidates.find((b) => b && b.length === 32);
  if (!k)
    throw new ConfigError([
      `${where}: must be 32 bytes encoded as base64, base64url or hex (generate with: openssl rand -base64 32)`,
    ]);
  return k;
}

/** Loads the KEK, creating the key file on first use when no PORTCULLIS_KEK is given. */
export function loadKek(kekFile: string, opts: { create: boolean }): Kek {
  const env = process.env.PORTCULLIS_KEK;
  if (env !== undefined && env !== '') return new Kek(decodeKek(env, 'PORTCULLIS_KEK'), 'PORTCULLIS_KEK');
  const path = resolve(kekFile);
  if (!existsSync(path)) {
    if (!opts.create) throw new ConfigError([`keys.kek_file: ${path} does not exist and PORTCULLIS_KEK is not set`]);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(path, 0o600);
  }
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o077)
    throw new ConfigError([
      `keys.kek_file: ${path} is readable by group or others (mode ${mode.toString(8)}); run chmod 600 on it`,
    ]);
  return new Kek(decodeKek(readFileSync(path, 'utf8'), `keys.kek_file (${path})`), path);
}
