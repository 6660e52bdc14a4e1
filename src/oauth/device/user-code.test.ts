import { describe, expect, it } from 'vitest';
import { formatUserCode, generateUserCode, normaliseUserCode, USER_CODE_ALPHABET } from './user-code.ts';

describe('user codes (RFC 8628 §6.1)', () => {
  it('are 8 characters from the 20-letter consonant alphabet, roughly uniform', () => {
    expect(USER_CODE_ALPHABET).toHaveLength(20);
    expect(USER_CODE_ALPHABET).not.toMatch(/[AEIOUY0-9]/);
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const c = generateUserCode();
      expect(c).toMatch(/^[BCDFGHJKLMNPQRSTVWXZ]{8}$/);
      for (const ch of c) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    }
    expect(counts.size).toBe(20);
    for (const n of counts.values()) expect(n).toBeGreaterThan(500); // expected 800 each
  });

  it('are entered case-insensitively, dashes and spaces ignored', () => {
    expect(normaliseUserCode('wdjb-mjht')).toBe('WDJBMJHT');
    expect(normaliseUserCode(' WdJb mJhT ')).toBe('WDJBMJHT');
    expect(normaliseUserCode('W-D-J-B-M-J-H-T')).toBe('WDJBMJHT');
    expect(normaliseUserCode('ＷＤＪＢ－ＭＪＨＴ')).toBe('WDJBMJHT'); // full-width, as some keyboards type
    expect(normaliseUserCode('WDJB-MJH')).toBeUndefined();
    expect(normaliseUserCode('WDJB-MJHA')).toBeUndefined(); // a vowel is never part of a code
    expect(normaliseUserCode('WDJB-MJH1')).toBeUndefined();
    expect(normaliseUserCode(undefined)).toBeUndefined();
    expect(normaliseUserCode('W'.repeat(100))).toBeUndefined();
    expect(formatUserCode('WDJBMJHT')).toBe('WDJB-MJHT');
  });
});
