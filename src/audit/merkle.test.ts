import { describe, expect, it } from 'vitest';
import {
  consistencyProof,
  EMPTY_ROOT,
  Frontier,
  inclusionProof,
  leafHash,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
} from './merkle.ts';

const leaves = Array.from({ length: 70 }, (_, i) => leafHash(`entry ${i}`));

describe('RFC 9162 Merkle tree', () => {
  it('hashes with the RFC 6962 / 9162 domain separation', () => {
    expect(EMPTY_ROOT.toString('hex')).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
    expect(leafHash('').toString('hex')).toBe('6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d');
  });

  it('the frontier gives the same root as the recursive definition at every size', () => {
    const f = new Frontier();
    expect(f.root().equals(EMPTY_ROOT)).toBe(true);
    for (let n = 1; n <= leaves.length; n++) {
      f.append(leaves[n - 1] as Buffer);
      expect(f.root().equals(subtreeRoot(leaves, 0, n))).toBe(true);
      const copy = Frontier.fromJSON(JSON.parse(JSON.stringify(f.toJSON())));
      expect(copy.root().equals(f.root())).toBe(true);
    }
  });

  it('inclusion proofs verify for every leaf and fail for a wrong leaf, index or root', () => {
    for (let n = 1; n <= 33; n++) {
      const root = subtreeRoot(leaves, 0, n);
      for (let m = 0; m < n; m++) {
        const p = inclusionProof(leaves, m, n);
        expect(verifyInclusion(leaves[m] as Buffer, m, n, p, root)).toBe(true);
        expect(verifyInclusion(leaves[(m + 1) % 70] as Buffer, m, n, p, root)).toBe(false);
        if (n > 1) expect(verifyInclusion(leaves[m] as Buffer, (m + 1) % n, n, p, root)).toBe(false);
        expect(verifyInclusion(leaves[m] as Buffer, m, n, p, leafHash('x'))).toBe(false);
      }
    }
  });

  it('consistency proofs verify for every pair of sizes and fail against another history', () => {
    const other = [...leaves];
    other[3] = leafHash('changed');
    for (let n = 1; n <= 40; n++) {
      for (let m = 1; m <= n; m++) {
        const p = consistencyProof(leaves, m, n);
        const r1 = subtreeRoot(leaves, 0, m);
        const r2 = subtreeRoot(leaves, 0, n);
        expect(verifyConsistency(m, n, p, r1, r2)).toBe(true);
        if (m > 3) expect(verifyConsistency(m, n, p, subtreeRoot(other, 0, m), r2)).toBe(false);
        if (n > 3 && m < n) expect(verifyConsistency(m, n, p, r1, subtreeRoot(other, 0, n))).toBe(false);
      }
    }
  });
});
