import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { leafHash } from './merkle.ts';
import { openCheckpoint, parseVerifierKey, rawPublicKey, signCheckpoint, verifierKey } from './note.ts';

describe('C2SP signed-note checkpoints', () => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const vkey = verifierKey('auth.example.com/audit', rawPublicKey(publicKey));
  const cp = { origin: 'auth.example.com/audit', size: 42, root: leafHash('x'), time: 1_700_000_000_000 };

  it('round-trips and verifies with the verifier key', () => {
    const note = signCheckpoint(cp, 'auth.example.com/audit', privateKey);
    expect(note.split('\n').slice(0, 5)).toEqual([cp.origin, '42', cp.root.toString('base64'), `time ${cp.time}`, '']);
    expect(note).toMatch(/\n\n\u2014 auth\.example\.com\/audit [A-Za-z0-9+/]+=*\n$/);
    const opened = openCheckpoint(note, parseVerifierKey(vkey));
    expect(opened.verified).toBe(true);
    expect(opened.checkpoint.size).toBe(42);
    expect(opened.checkpoint.root.equals(cp.root)).toBe(true);
  });

  it('refuses an altered body, another key, and a malformed note', () => {
    const note = signCheckpoint(cp, 'auth.example.com/audit', privateKey);
    const altered = note.replace('\n42\n', '\n43\n');
    expect(openCheckpoint(altered, parseVerifierKey(vkey)).verified).toBe(false);
    const other = generateKeyPairSync('ed25519');
    const forged = signCheckpoint(cp, 'auth.example.com/audit', other.privateKey);
    expect(openCheckpoint(forged, parseVerifierKey(vkey)).verified).toBe(false);
    expect(() => openCheckpoint('nonsense', parseVerifierKey(vkey))).toThrow();
    expect(() => parseVerifierKey(vkey.replace(/\+[0-9a-f]{8}\+/, '+00000000+'))).toThrow(/id/);
  });
});
