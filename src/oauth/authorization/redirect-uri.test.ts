import { describe, expect, it } from 'vitest';
import { redirectUriAllowed, withQuery } from './redirect-uri.ts';

describe('redirectUriAllowed', () => {
  const reg = ['https://app.example.com/cb', 'http://127.0.0.1/native', 'http://[::1]:8080/cb', 'com.example.app:/cb'];
  it('accepts exact matches', () => {
    for (const r of reg) expect(redirectUriAllowed(reg, r)).toBe(true);
  });
  it('refuses every near miss', () => {
    for (const r of [
      'https://app.example.com/cb/',
      'https://APP.example.com/cb',
      'https://app.example.com/CB',
      'https://app.example.com/cb?x=1',
      'https://app.example.com/cb#f',
      'https://evil@app.example.com/cb',
      'https://app.example.com@evil.com/cb',
      'https://app.example.com:8443/cb',
      'https://app.example.com/cb/../cb',
      'https://app.example.com/x/../cb',
      'http://app.example.com/cb',
      'http://127.0.0.1:5000/native/../native',
      'http://127.0.0.1:5000/x/../native',
      'http://127.0.0.1@evil.com/native',
      'http://127.0.0.1:5000/native/',
      'http://127.0.0.1:0/native',
      'http://127.0.0.1:99999/native',
      'http://localhost:5000/native',
      'https://127.0.0.1:5000/native',
      'http://127.0.0.2:5000/native',
    ])
      expect(redirectUriAllowed(reg, r), r).toBe(false);
  });
  it('loopback IP literals accept any port (RFC 8252 §7.3)', () => {
    expect(redirectUriAllowed(reg, 'http://127.0.0.1:51234/native')).toBe(true);
    expect(redirectUriAllowed(reg, 'http://[::1]:3000/cb')).toBe(true);
    expect(redirectUriAllowed(reg, 'http://[::1]/cb')).toBe(true);
  });
});

describe('withQuery', () => {
  it('keeps the registered query and appends', () => {
    expect(withQuery('https://a.example/cb?x=1', { code: 'c', state: undefined, iss: 'https://as' })).toBe(
      'https://a.example/cb?x=1&code=c&iss=https%3A%2F%2Fas',
    );
  });
});
