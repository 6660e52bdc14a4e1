import { createHash, hash } from 'node:crypto';

/**
 * Merkle tree hashing as RFC 9162 §2.1 defines it (the Certificate Transparency v2 tree, same as RFC 6962):
 * leaf hash = SHA-256(0x00 || entry), interior node = SHA-256(0x01 || left || right), and a tree of n leaves splits
 * at the largest power of two smaller than n. The empty tree's hash is SHA-256 of nothing.
 */

const LEAF_PREFIX = Buffer.from([0]);
const NODE_PREFIX = Buffer.from([1]);

// One-shot crypto.hash: about half the cost of createHash().update().digest() per call, which matters at tens of
// thousands of leaves per second.
export function leafHash(entry: Buffer | string): Buffer {
  if (typeof entry === 'string') return hash('sha256', `\0${entry}`, 'buffer'); // UTF-8 of U+0000 is the byte 0x00
  return hash('sha256', Buffer.concat([LEAF_PREFIX, entry]), 'buffer');
}

export function nodeHash(left: Buffer, right: Buffer): Buffer {
  return hash('sha256', Buffer.concat([NODE_PREFIX, left, right], 65), 'buffer');
}

function isPowerOfTwo(n: number): boolean {
  let x = n;
  while (x > 1 && x % 2 === 0) x /= 2;
  return x === 1;
}

export const EMPTY_ROOT: Buffer = createHash('sha256').digest();

/** The largest power of two strictly smaller than n (n >= 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * The state needed to extend a tree and compute its root without its leaves: the roots of the perfect subtrees the
 * tree decomposes into, largest (leftmost) first — one per set bit of `size`. Appending is O(log n) amortised.
 */
export class Frontier {
  size: number;
  readonly hashes: Buffer[];

  constructor(size = 0, hashes: Buffer[] = []) {
    let bits = 0;
    for (let s = size; s > 0; s = Math.floor(s / 2)) bits += s % 2;
    if (hashes.length !== bits) throw new Error(`frontier of size ${size} needs ${bits} hashes, got ${hashes.length}`);
    this.size = size;
    this.hashes = hashes;
  }

  append(leaf: Buffer): void {
    let h = leaf;
    // Merge equal-sized subtrees: each trailing 1 bit of the old size is a subtree that the new leaf completes.
    for (let s = this.size; s % 2 === 1; s = Math.floor(s / 2)) {
      const left = this.hashes.pop() as Buffer;
      h = nodeHash(left, h);
    }
    this.hashes.push(h);
    this.size += 1;
  }

  root(): Buffer {
    if (this.size === 0) return EMPTY_ROOT;
    let r = this.hashes[this.hashes.length - 1] as Buffer;
    for (let i = this.hashes.length - 2; i >= 0; i--) r = nodeHash(this.hashes[i] as Buffer, r);
    return r;
  }

  clone(): Frontier {
    return new Frontier(this.size, [...this.hashes]);
  }

  toJSON(): { size: number; hashes: string[] } {
    return { size: this.size, hashes: this.hashes.map((h) => h.toString('base64')) };
  }

  static fromJSON(v: { size: number; hashes: string[] }): Frontier {
    return new Frontier(
      v.size,
      v.hashes.map((h) => Buffer.from(h, 'base64')),
    );
  }
}

/** MTH(D[lo:hi]) over leaf hashes (RFC 9162 §2.1.1), recursively. */
export function subtreeRoot(leaves: readonly Buffer[], lo = 0, hi = leaves.length): Buffer {
  const n = hi - lo;
  if (n === 0) return EMPTY_ROOT;
  if (n === 1) return leaves[lo] as Buffer;
  const k = splitPoint(n);
  return nodeHash(subtreeRoot(leaves, lo, lo + k), subtreeRoot(leaves, lo + k, hi));
}

/** The inclusion proof (audit path) for leaf m in the tree of the first n leaves (RFC 9162 §2.1.3.1). */
export function inclusionProof(leaves: readonly Buffer[], m: number, n: number = leaves.length): Buffer[] {
  if (!(m >= 0 && m < n && n <= leaves.length)) throw new RangeError(`no leaf ${m} in a tree of size ${n}`);
  const path: Buffer[] = [];
  const walk = (lo: number, hi: number, idx: number) => {
    const size = hi - lo;
    if (size <= 1) return;
    const k = splitPoint(size);
    if (idx < k) {
      walk(lo, lo + k, idx);
      path.push(subtreeRoot(leaves, lo + k, hi));
    } else {
      walk(lo + k, hi, idx - k);
      path.push(subtreeRoot(leaves, lo, lo + k));
    }
  };
  walk(0, n, m);
  return path;
}

/** The consistency proof between the trees of the first m and first n leaves (RFC 9162 §2.1.4.1). */
export function consistencyProof(leaves: readonly Buffer[], m: number, n: number = leaves.length): Buffer[] {
  if (!(m > 0 && m <= n && n <= leaves.length)) throw new RangeError(`no consistency proof from ${m} to ${n}`);
  const proof: Buffer[] = [];
  const sub = (lo: number, hi: number, mm: number, complete: boolean) => {
    const size = hi - lo;
    if (mm === size) {
      if (!complete) proof.push(subtreeRoot(leaves, lo, hi));
      return;
    }
    const k = splitPoint(size);
    if (mm <= k) {
      sub(lo, lo + k, mm, complete);
      proof.push(subtreeRoot(leaves, lo + k, hi));
    } else {
      sub(lo + k, hi, mm - k, false);
      proof.push(subtreeRoot(leaves, lo, lo + k));
    }
  };
  sub(0, n, m, true);
  return proof;
}

/** Verifies an inclusion proof (RFC 9162 §2.1.3.2). */
export function verifyInclusion(
  leaf: Buffer,
  index: number,
  size: number,
  proof: readonly Buffer[],
  root: Buffer,
): boolean {
  if (!(index >= 0 && index < size)) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

/** Verifies a consistency proof between (size1, root1) and (size2, root2) (RFC 9162 §2.1.4.2). */
export function verifyConsistency(
  size1: number,
  size2: number,
  proof: readonly Buffer[],
  root1: Buffer,
  root2: Buffer,
): boolean {
  if (size1 === size2) return proof.length === 0 && root1.equals(root2);
  if (size1 === 0) return proof.length === 0; // the empty tree is a prefix of every tree
  if (size1 > size2 || proof.length === 0) return false;
  let path = [...proof];
  // When size1 is a power of two the first tree is a complete subtree of the second: its root starts the walk.
  if (isPowerOfTwo(size1)) path = [root1, ...path];
  let fn = size1 - 1;
  let sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0] as Buffer;
  let sr = path[0] as Buffer;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(root1) && sr.equals(root2);
}
