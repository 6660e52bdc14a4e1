#!/usr/bin/env node
// Standalone verifier of Portcullis audit log proofs (docs/audit.md, "Standalone verifier").
// No dependencies and nothing from Portcullis itself: plain JavaScript for any Node.js >= 18, short enough to read
// before trusting it. It checks, against verifier keys YOU supply (from `portcullis audit key`, kept apart from the
// server):
//   inclusion proof   (`portcullis audit proof --event ID`, GET /admin/audit/proofs/inclusion)
//     - the event's fields encode to the entry, and SHA-256(0x00 || entry) is the leaf hash;
//     - the checkpoint note is signed by one of the keys (C2SP signed note, Ed25519) and names that tree size;
//     - the audit path leads from the leaf to the checkpoint's root (RFC 9162 section 2.1.3.2).
//   consistency proof (`portcullis audit proof --from N --to M`, GET /admin/audit/proofs/consistency)
//     - both checkpoint notes are signed by one of the keys;
//     - the proof shows the older tree is a prefix of the newer one (RFC 9162 section 2.1.4.2).
//
// Usage: node verify-audit-proof.mjs --key VERIFIER_KEY [--key ANOTHER] PROOF.json   ("-" or nothing: stdin)
// Exit status: 0 verified, 1 anything else (the message says what failed).

import { createHash, createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

function fail(message) {
  process.stderr.write(`FAILED: ${message}\n`);
  process.exit(1);
}

const sha256 = (...parts) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const leafHash = (entry) => sha256(Buffer.from([0]), Buffer.from(entry, 'utf8'));
const nodeHash = (l, r) => sha256(Buffer.from([1]), l, r);

function b64hash(s, what) {
  if (typeof s !== 'string') fail(`${what} is missing`);
  const b = Buffer.from(s, 'base64');
  if (b.length !== 32 || b.toString('base64') !== s) fail(`${what} is not a base64 SHA-256 hash`);
  return b;
}

// Signed-note verifier key: <name>+<8 hex digits key id>+<base64(0x01 || 32-byte Ed25519 public key)>.
function parseKey(text) {
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) fail(`not a verifier key: ${text}`);
  const body = Buffer.from(m[3], 'base64');
  if (body.length !== 33 || body[0] !== 1) fail(`not an Ed25519 verifier key: ${text}`);
  const id = sha256(Buffer.from(`${m[1]}\n`), body).subarray(0, 4);
  if (id.toString('hex') !== m[2]) fail(`verifier key id does not match its name and key: ${text}`);
  const der = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), body.subarray(1)]);
  return { name: m[1], id, key: createPublicKey({ key: der, format: 'der', type: 'spki' }) };
}

// A C2SP tlog-checkpoint signed note: origin, size, base64 root, extension lines, blank line, signature lines
// "— <name> <base64(4-byte key id || 64-byte signature)>". The signature covers the text before the blank line.
function openNote(note, keys, what) {
  if (typeof note !== 'string') fail(`${what}: the checkpoint note is missing`);
  const split = note.indexOf('\n\n');
  if (split < 0 || !note.endsWith('\n')) fail(`${what}: not a signed note`);
  const body = note.slice(0, split + 1);
  const [origin, sizeText, rootText] = body.split('\n');
  if (!/^(0|[1-9][0-9]{0,15})$/.test(sizeText ?? '')) fail(`${what}: bad tree size line`);
  const root = b64hash(rootText, `${what}: root hash`);
  let signer;
  for (const line of note.slice(split + 2, -1).split('\n')) {
    if (!line.startsWith('\u2014 ')) fail(`${what}: malformed signature line`);
    const sp = line.lastIndexOf(' ');
    const name = line.slice(2, sp);
    const blob = Buffer.from(line.slice(sp + 1), 'base64');
    for (const k of keys)
      if (name === k.name && blob.length === 68 && blob.subarray(0, 4).equals(k.id))
        if (verify(null, Buffer.from(body, 'utf8'), k.key, blob.subarray(4))) signer = k;
  }
  if (!signer) fail(`${what}: the checkpoint is not signed by any of the given keys`);
  if (origin !== signer.name) fail(`${what}: origin "${origin}" is not the key's name "${signer.name}"`);
  const timeLine = body.split('\n').find((l) => l.startsWith('time '));
  return { origin, size: Number(sizeText), root, time: timeLine ? Number(timeLine.slice(5)) : undefined };
}

// RFC 9162 section 2.1.3.2.
function verifyInclusion(leaf, index, size, path, root) {
  if (!(index >= 0 && index < size)) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

// RFC 9162 section 2.1.4.2.
function verifyConsistency(size1, size2, path, root1, root2) {
  if (size1 === size2) return path.length === 0 && root1.equals(root2);
  if (size1 === 0) return path.length === 0;
  if (size1 > size2 || path.length === 0) return false;
  let p = path;
  let x = size1;
  while (x > 1 && x % 2 === 0) x /= 2;
  if (x === 1) p = [root1, ...path]; // the old tree is a complete subtree: its root starts the walk
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = p[0];
  let sr = p[0];
  for (const c of p.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(root1) && sr.equals(root2);
}

// The canonical entry of an event (docs/audit.md "Entries"), version 1.
const FIELDS = ['id', 'type', 'at', 'client_id', 'subject', 'jti', 'grant_id', 'session_id', 'ip', 'request_id', 'actor', 'data'];
const entryOf = (e) => JSON.stringify([1, ...FIELDS.map((f) => e[f])]);

// --- main
const args = process.argv.slice(2);
const keyTexts = [];
let file;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--key') keyTexts.push(args[++i] ?? '');
  else if (args[i].startsWith('--key=')) keyTexts.push(args[i].slice(6));
  else if (args[i] === '-h' || args[i] === '--help') {
    process.stdout.write('usage: node verify-audit-proof.mjs --key VERIFIER_KEY [--key KEY2] [PROOF.json | -]\n');
    process.exit(0);
  } else if (file === undefined) file = args[i];
  else fail(`unexpected argument ${args[i]}`);
}
if (keyTexts.length === 0) fail('give the verifier key with --key (`portcullis audit key` prints it)');
const keys = keyTexts.map(parseKey);
let proof;
try {
  proof = JSON.parse(readFileSync(file === undefined || file === '-' ? 0 : file, 'utf8'));
} catch (e) {
  fail(`cannot read the proof JSON: ${e.message}`);
}
const hashes = (list) => {
  if (!Array.isArray(list)) fail('proof is not a list of hashes');
  return list.map((h, i) => b64hash(h, `proof hash ${i}`));
};

if (proof.type === 'inclusion') {
  const { leaf_index: index, tree_size: size } = proof;
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size)) fail('leaf_index and tree_size must be integers');
  if (typeof proof.entry !== 'string') fail('the entry is missing');
  if (proof.event !== undefined && entryOf(proof.event) !== proof.entry)
    fail('the event fields do not encode to the entry');
  const leaf = leafHash(proof.entry);
  if (!leaf.equals(b64hash(proof.leaf_hash, 'leaf_hash'))) fail('the entry does not hash to leaf_hash');
  const cp = openNote(proof.checkpoint?.note, keys, 'checkpoint');
  if (cp.size !== size) fail(`the checkpoint is for tree size ${cp.size}, the proof for ${size}`);
  if (!verifyInclusion(leaf, index, size, hashes(proof.proof), cp.root))
    fail(`the inclusion proof does not lead from leaf ${index} to the checkpoint's root`);
  const id = proof.event?.id ?? JSON.parse(proof.entry)[1];
  process.stdout.write(
    `OK: event ${id} is leaf ${index} of ${cp.origin}, in the tree of size ${size} signed${cp.time ? ` at ${new Date(cp.time).toISOString()}` : ''}\n`,
  );
} else if (proof.type === 'consistency') {
  const a = openNote(proof.from?.note, keys, 'from checkpoint');
  const b = openNote(proof.to?.note, keys, 'to checkpoint');
  if (a.origin !== b.origin) fail('the two checkpoints are of different logs');
  if (!verifyConsistency(a.size, b.size, hashes(proof.proof), a.root, b.root))
    fail(`the consistency proof does not show tree ${a.size} is a prefix of tree ${b.size}`);
  process.stdout.write(`OK: ${a.origin}: the tree of size ${a.size} is a prefix of the tree of size ${b.size}\n`);
} else {
  fail('not a Portcullis audit proof (type must be "inclusion" or "consistency")');
}
