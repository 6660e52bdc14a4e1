import { describe, expect, it } from 'vitest';
import { FailureWindow } from './failure-window.ts';

describe('FailureWindow', () => {
  it('counts failures per key within a sliding window', () => {
    let now = 1_000_000;
    const w = new FailureWindow({ nowMs: () => now }, 900);
    expect(w.count('a')).toBe(0);
    expect(w.record('a')).toBe(1);
    now += 60_000;
    expect(w.record('a')).toBe(2);
    expect(w.record('b')).toBe(1);
    expect(w.count('a')).toBe(2);
    expect(w.retryAfter('a')).toBe(840);
    now += 841_000; // the first failure left the window
    expect(w.count('a')).toBe(1);
    now += 60_000;
    expect(w.count('a')).toBe(0);
    expect(w.retryAfter('a')).toBe(0);
  });

  it('forgets the least recently failed keys beyond its bound', () => {
    const w = new FailureWindow({ nowMs: () => 5 }, 60, 2);
    w.record('a');
    w.record('b');
    w.record('a');
    w.record('c');
    expect(w.count('b')).toBe(0);
    expect(w.count('a')).toBe(2);
    expect(w.count('c')).toBe(1);
  });
});
