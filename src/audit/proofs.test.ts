import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { consistencyProof, inclusionProof, leafHash } from './merkle.ts';
import { consistencyRanges, inclusionRanges, RangeHasher } from './proofs.ts';

const leaves = Array.from({ length: 41 }, (_, i) => leafHash(createHash('sha256').update(String(i)).digest()));

function streamed(ranges: ReturnType<typeof inclusionRanges>): Buffer[] {
  const h = new RangeHasher(ranges);
  for (let i = 0; i < h.end; i++) h.feed(i, leaves[i] as Buffer);
  return h.hashes();
}

describe('proof ranges (one pass over the leaf hashes)', () => {
  it('give the same inclusion proofs as the in-memory construction, for every leaf and size', () => {
    for (let n = 1; n <= leaves.length; n++)
      for (let m = 0; m < n; m++) expect(streamed(inclusionRanges(m, n))).toEqual(inclusionProof(leaves, m, n));
  });

  it('give the same consistency proofs as the in-memory construction, for every pair of sizes', () => {
    for (let n = 1; n <= leaves.length; n++)
      for (let m = 1; m <= n; m++) expect(streamed(consistencyRanges(m, n))).toEqual(consistencyProof(leaves, m, n));
  });

  it('refuse a range that was not fed completely, and impossible sizes', () => {
    const h = new RangeHasher(inclusionRanges(3, 8));
    for (let i = 0; i < 5; i++) h.feed(i, leaves[i] as Buffer);
    expect(() => h.hashes()).toThrow(/not all present/);
    expect(() => inclusionRanges(8, 8)).toThrow(RangeError);
    expect(() => consistencyRanges(0, 8)).toThrow(RangeError);
  });
});
