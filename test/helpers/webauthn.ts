/**
 * A software WebAuthn authenticator for black-box tests of the server's checks (W3C WebAuthn Level 3 §6.1
 * authenticator data, §6.5 attestation "none", §5.8.1 client data), with knobs to break one thing at a time:
 * user verification flag, origin, counter, challenge. The real-browser test uses Chromium's virtual authenticator.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, sign } from 'node:crypto';

// Minimal CBOR (RFC 8949) encoder: unsigned/negative ints, byte and text strings, maps.
type Cbor = number | string | Buffer | CborMap | CborObject;
interface CborMap extends Map<Cbor, Cbor> {}
interface CborObject {
  [key: string]: Cbor;
}
function head(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 256) return Buffer.from([(major << 5) | 24, n]);
  if (n < 65536) return Buffer.from([(major << 5) | 25, n >> 8, n & 255]);
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}
export function cbor(v: Cbor): Buffer {
  if (typeof v === 'number') return v >= 0 ? head(0, v) : head(1, -1 - v);
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([head(3, b.length), b]);
  }
  if (Buffer.isBuffer(v)) return Buffer.concat([head(2, v.length), v]);
  const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
  return Buffer.concat([head(5, entries.length), ...entries.flatMap(([k, x]) => [cbor(k), cbor(x)])]);
}

const b64u = (b: Buffer) => b.toString('base64url');
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest();

const UP = 0x01;
const UV = 0x04;
const AT = 0x40;

export interface Knobs {
  /** Default true. */
  userVerified?: boolean;
  /** Default the expected origin. */
  origin?: string;
  /** Override the challenge echoed in clientDataJSON. */
  challenge?: string;
  /** Sign for another relying party ID (authenticator data's rpIdHash). */
  rpId?: string;
}

export class SoftAuthenticator {
  readonly credentialId = randomBytes(32);
  private readonly key: KeyObject;
  private readonly cose: Buffer;
  counter = 0;
  readonly rpId: string;
  readonly origin: string;
  constructor(issuer: string) {
    const u = new URL(issuer);
    this.rpId = u.hostname;
    this.origin = u.origin;
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.key = privateKey;
    const jwk = publicKey.export({ format: 'jwk' });
    // COSE_Key (RFC 9052 §7, RFC 9053 §7.1.1): kty EC2, alg ES256, crv P-256, x, y.
    this.cose = cbor(
      new Map<Cbor, Cbor>([
        [1, 2],
        [3, -7],
        [-1, 1],
        [-2, Buffer.from(jwk.x!, 'base64url')],
        [-3, Buffer.from(jwk.y!, 'base64url')],
      ]),
    );
  }

  private authData(flags: number, counter: number, attested: boolean, rpId = this.rpId): Buffer {
    const c = Buffer.alloc(4);
    c.writeUInt32BE(counter);
    const parts: Buffer[] = [sha256(rpId), Buffer.from([flags]), c];
    if (attested) {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(this.credentialId.length);
      parts.push(Buffer.alloc(16), len, this.credentialId, this.cose);
    }
    return Buffer.concat(parts);
  }

  /** navigator.credentials.create() answer, as the page's script would post it. */
  register(options: { challenge: string }, k: Knobs = {}): string {
    const clientData = Buffer.from(
      JSON.stringify({
        type: 'webauthn.create',
        challenge: k.challenge ?? options.challenge,
        origin: k.origin ?? this.origin,
        crossOrigin: false,
      }),
    );
    const flags = UP | AT | (k.userVerified === false ? 0 : UV);
    const attestation = cbor({ fmt: 'none', attStmt: {}, authData: this.authData(flags, this.counter, true, k.rpId) });
    return JSON.stringify({
      id: b64u(this.credentialId),
      rawId: b64u(this.credentialId),
      type: 'public-key',
      clientExtensionResults: {},
      response: { clientDataJSON: b64u(clientData), attestationObject: b64u(attestation), transports: ['internal'] },
    });
  }

  /** navigator.credentials.get() answer. `counter` defaults to one more than the last. */
  assert(options: { challenge: string }, k: Knobs & { counter?: number } = {}): string {
    const counter = k.counter ?? this.counter + 1;
    this.counter = Math.max(this.counter, counter);
    const clientData = Buffer.from(
      JSON.stringify({
        type: 'webauthn.get',
        challenge: k.challenge ?? options.challenge,
        origin: k.origin ?? this.origin,
        crossOrigin: false,
      }),
    );
    const authData = this.authData(UP | (k.userVerified === false ? 0 : UV), counter, false, k.rpId);
    const signature = sign('sha256', Buffer.concat([authData, sha256(clientData)]), this.key);
    return JSON.stringify({
      id: b64u(this.credentialId),
      rawId: b64u(this.credentialId),
      type: 'public-key',
      clientExtensionResults: {},
      response: {
        clientDataJSON: b64u(clientData),
        authenticatorData: b64u(authData),
        signature: b64u(signature),
      },
    });
  }
}

/** The WebAuthn options a page put in its passkey form's data-options attribute. */
export function pageOptions(html: string): { challenge: string } & Record<string, unknown> {
  const m = /id="passkey-form"[^>]*data-options="([^"]*)"/.exec(html);
  if (!m) throw new Error(`no passkey form in:\n${html.slice(0, 1500)}`);
  const json = m[1]!
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>');
  return JSON.parse(json.replace(/&amp;/g, '&'));
}
