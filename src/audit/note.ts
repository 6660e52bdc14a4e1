import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';

/**
 * Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes with Ed25519, so standard
 * transparency-log tooling (e.g. golang.org/x/mod/sumdb/note, the tlog-checkpoint readers) can read and verify them:
 *
 *   <origin>\n<tree size>\n<base64 root hash>\n[extension lines]\n\n— <key name> <base64(key id || signature)>\n
 *
 * The signature covers the note text up to and including the newline before the blank line. Key id = the first
 * 4 bytes of SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key) (0x01: the Ed25519 signature type).
 * Portcullis adds one extension line, `time <epoch ms>`, the time the sealer signed the checkpoint.
 */

const ED25519_TYPE = 0x01;
const SIG_PREFIX = '\u2014 ';
/** DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows. */
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface Checkpoint {
  origin: string;
  size: number;
  root: Buffer;
  /** Epoch milliseconds (the `time` extension line). */
  time: number;
}

export function rawPublicKey(key: KeyObject): Buffer {
  const der = key.export({ format: 'der', type: 'spki' });
  return der.subarray(der.length - 32);
}

export function publicKeyFromRaw(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/** The 4-byte signed-note key id of an Ed25519 key with this name. */
export function keyId(name: string, rawPub: Buffer): Buffer {
  return createHash('sha256')
    .update(Buffer.from(`${name}\n`))
    .update(Buffer.from([ED25519_TYPE]))
    .update(rawPub)
    .digest()
    .subarray(0, 4);
}

/** The verifier key string of signed notes: `<name>+<hex key id>+<base64(0x01 || public key)>`. */
export function verifierKey(name: string, rawPub: Buffer): string {
  return `${name}+${keyId(name, rawPub).toString('hex')}+${Buffer.concat([Buffer.from([ED25519_TYPE]), rawPub]).toString('base64')}`;
}

export interface ParsedVerifierKey {
  name: string;
  id: Buffer;
  key: KeyObject;
  raw: Buffer;
}

export function parseVerifierKey(text: string): ParsedVerifierKey {
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) throw new Error('not a signed-note verifier key (name+hexid+base64key)');
  const [, name, hexId, b64] = m as unknown as [string, string, string, string];
  const body = Buffer.from(b64, 'base64');
  if (body.length !== 33 || body[0] !== ED25519_TYPE) throw new Error('verifier key is not an Ed25519 key');
  const raw = body.subarray(1);
  const id = keyId(name, raw);
  if (id.toString('hex') !== hexId) throw new Error('verifier key id does not match its name and key');
  return { name, id, key: publicKeyFromRaw(raw), raw };
}

export function checkpointBody(c: Checkpoint): string {
  if (!c.origin || /[\n\r]/.test(c.origin)) throw new Error('checkpoint origin must be one non-empty line');
  return `${c.origin}\n${c.size}\n${c.root.toString('base64')}\ntime ${c.time}\n`;
}

/** Signs any note text (one or more lines, each ending in a newline) as a C2SP signed note. */
export function signNote(body: string, name: string, privateKey: KeyObject): string {
  if (!body.endsWith('\n') || body.includes('\n\n')) throw new Error('a note body is lines ending in newlines');
  const raw = rawPublicKey(createPublicKey(privateKey));
  const sig = sign(null, Buffer.from(body), privateKey);
  return `${body}\n${SIG_PREFIX}${name} ${Buffer.concat([keyId(name, raw), sig]).toString('base64')}\n`;
}

/** Splits a signed note and says whether a signature line by `key` verifies its body. Throws when malformed. */
export function openNote(note: string, key: ParsedVerifierKey): { body: string; verified: boolean } {
  const split = note.indexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) throw new Error('not a signed note (no blank line before the signatures)');
  const body = note.slice(0, split + 1);
  let verified = false;
  for (const line of note.slice(split + 2, -1).split('\n')) {
    if (!line.startsWith(SIG_PREFIX)) throw new Error('malformed signature line');
    const sp = line.lastIndexOf(' ');
    const name = line.slice(SIG_PREFIX.length, sp);
    const blob = Buffer.from(line.slice(sp + 1), 'base64');
    if (name !== key.name || blob.length !== 68 || !blob.subarray(0, 4).equals(key.id)) continue;
    if (verify(null, Buffer.from(body), key.key, blob.subarray(4))) verified = true;
  }
  return { body, verified };
}

/** Signs a checkpoint: the whole signed note text. */
export function signCheckpoint(c: Checkpoint, name: string, privateKey: KeyObject): string {
  return signNote(checkpointBody(c), name, privateKey);
}

export interface OpenedNote {
  checkpoint: Checkpoint;
  body: string;
  /** Whether a signature line by the given key verified. */
  verified: boolean;
}

/**
 * Parses a signed checkpoint note and verifies its signature by `key`. Throws on a malformed note; returns
 * verified=false when no signature line of that key verifies (forged, altered, or signed by another key).
 */
export function openCheckpoint(note: string, key: ParsedVerifierKey): OpenedNote {
  const { body, verified } = openNote(note, key);
  const lines = body.slice(0, -1).split('\n');
  if (lines.length < 3) throw new Error('checkpoint has fewer than three lines');
  const [origin, sizeText, rootText, ...ext] = lines as [string, string, string, ...string[]];
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText)) throw new Error(`checkpoint tree size is not a decimal: ${sizeText}`);
  const root = Buffer.from(rootText, 'base64');
  if (root.length !== 32 || root.toString('base64') !== rootText)
    throw new Error('checkpoint root is not a base64 SHA-256 hash');
  const timeLine = ext.find((l) => l.startsWith('time '));
  const time = timeLine ? Number(timeLine.slice(5)) : Number.NaN;
  if (!Number.isSafeInteger(time)) throw new Error('checkpoint has no valid `time` line');
  return { checkpoint: { origin, size: Number(sizeText), root, time }, body, verified };
}

export function generateAuditKeyPem(): { privatePem: string; raw: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(), raw: rawPublicKey(publicKey) };
}

export function privateKeyFromPem(pem: string): KeyObject {
  return createPrivateKey(pem);
}
