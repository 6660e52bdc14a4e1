import { describe, expect, it } from 'vitest';
import { gcra, MemoryLimiter } from './rate-limiter.ts';

const rule = { name: 'r', limit: 5, window: 900 };

describe('MemoryLimiter (GCRA)', () => {
  it('allows a burst of `limit`, then one per window/limit, and is full again after a window', async () => {
    let now = 1_000_000;
    const l = new MemoryLimiter({ nowMs: () => now });
    for (let i = 0; i < 5; i++) expect((await l.hit('a', rule)).allowed).toBe(true);
    const refused = await l.hit('a', rule);
    expect(refused).toEqual({ allowed: false, retryAfter: 180 });
    expect((await l.hit('b', rule)).allowed).toBe(true); // keys are separate
    now += 179_000;
    expect((await l.check('a', rule)).allowed).toBe(false);
    now += 1_000; // one interval (900 s / 5) later, one more
    expect((await l.check('a', rule)).allowed).toBe(true);
    expect((await l.hit('a', rule)).allowed).toBe(true);
    expect((await l.hit('a', rule)).allowed).toBe(false);
    now += 900_000;
    for (let i = 0; i < 5; i++) expect((await l.hit('a', rule)).allowed).toBe(true);
  });

  it('check() counts nothing; refused hits are not counted; rules with the same key are separate', async () => {
    const now = 5_000;
    const l = new MemoryLimiter({ nowMs: () => now });
    for (let i = 0; i < 20; i++) expect((await l.check('a', rule)).allowed).toBe(true);
    for (let i = 0; i < 5; i++) await l.hit('a', rule);
    expect((await l.hit('a', { ...rule, name: 'other' })).allowed).toBe(true);
  });

  it('limit 0 switches a rule off', async () => {
    const l = new MemoryLimiter({ nowMs: () => 1 });
    for (let i = 0; i < 100; i++) expect((await l.hit('a', { name: 'off', limit: 0, window: 1 })).allowed).toBe(true);
  });

  it('stays bounded: beyond maxKeys the least recently hit keys are forgotten', async () => {
    const l = new MemoryLimiter({ nowMs: () => 1 }, 2);
    const one = { name: 'x', limit: 1, window: 60 };
    await l.hit('a', one);
    await l.hit('b', one);
    await l.hit('c', one);
    expect((await l.check('a', one)).allowed).toBe(true); // forgotten
    expect((await l.check('c', one)).allowed).toBe(false);
  });

  it('gcra() is the pure step both stores share', () => {
    expect(gcra(0, 1000, { name: 'g', limit: 2, window: 10 })).toEqual({ allowed: true, retryAfterMs: 0, tat: 6000 });
    expect(gcra(11_000, 1000, { name: 'g', limit: 2, window: 10 }).allowed).toBe(false);
  });
});
