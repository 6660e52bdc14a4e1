import { describe, expect, it } from 'vitest';
import { checkNewPassword, commonPasswords, passwordLength, passwordMinLength } from './password-policy.ts';

const ctx = { minLength: 15, contextWords: ['alice', 'Example Sign-in'] };

describe('password policy (NIST SP 800-63B-4 §3.1.1.2)', () => {
  it('15 characters alone, 8 with MFA; up to 256; counted in code points after NFKC', () => {
    expect(passwordMinLength(false)).toBe(15);
    expect(passwordMinLength(true)).toBe(8);
    expect(checkNewPassword('fourteen chars', ctx)).toMatch(/at least 15 characters \(it has 14\)/);
    expect(checkNewPassword('fifteen chars!!', ctx)).toBeUndefined();
    expect(checkNewPassword('x'.repeat(10) + 'y'.repeat(246), ctx)).toBeUndefined();
    expect(checkNewPassword('xy'.repeat(129), ctx)).toMatch(/at most 256/);
    // Emoji and accents count once each; "ﬁ" (one code point) becomes "fi" under NFKC.
    expect(passwordLength('🦊🦊🦊')).toBe(3);
    expect(passwordLength('ﬁ')).toBe(2);
    expect(checkNewPassword('🦊🐻🦉🐝🐢 forest walk', { ...ctx, minLength: 8 })).toBeUndefined();
  });

  it('no composition rules: lower-case words with spaces are fine', () => {
    expect(checkNewPassword('purple monkeys dance quietly', ctx)).toBeUndefined();
  });

  it('refuses common and breached passwords, whatever the case or spacing', () => {
    expect(commonPasswords().size).toBeGreaterThan(5000);
    expect(checkNewPassword('qwerty123456789', ctx)).toMatch(/common or breached/);
    expect(checkNewPassword('Q1W2E3R4T5Y6U7I8', ctx)).toMatch(/common or breached/);
    expect(checkNewPassword('1qaz 2wsx 3edc 4rfv', ctx)).toMatch(/common or breached/);
    expect(checkNewPassword('iloveyou', { ...ctx, minLength: 8 })).toMatch(/common or breached/);
    expect(checkNewPassword('aaaaaaaaaaaaaaaaaa', ctx)).toMatch(/repeats one character/);
  });

  it('refuses passwords built from the username or the service name', () => {
    expect(checkNewPassword('alicealice2024!!', ctx)).toMatch(/too close to "alice"/);
    expect(checkNewPassword('Example-Sign-In-123', ctx)).toMatch(/too close to "Example Sign-in"/);
    expect(checkNewPassword('alice likes long walks', ctx)).toBeUndefined();
  });
});
