import { describe, expect, it } from 'vitest';
import { formatUserCode, newUserCode, normalizeUserCode, USER_CODE_ALPHABET } from './user-code.ts';

describe('user codes', () => {
  it('are 8 letters from a 20-letter alphabet', () => {
    expect(USER_CODE_ALPHABET).toHaveLength(20);
    for (let i = 0; i < 100; i++) expect(newUserCode()).toMatch(/^[BCDFGHJKLMNPQRSTVWXZ]{8}$/);
  });
  it('normalise case, dashes and spaces; refuse anything else', () => {
    expect(normalizeUserCode('bcdf-ghjk')).toBe('BCDFGHJK');
    expect(normalizeUserCode(' BCDF GHJK ')).toBe('BCDFGHJK');
    expect(normalizeUserCode('BCDFGHJ')).toBeUndefined();
    expect(normalizeUserCode('ABCDFGHJ')).toBeUndefined(); // vowel
    expect(formatUserCode('BCDFGHJK')).toBe('BCDF-GHJK');
  });
});
