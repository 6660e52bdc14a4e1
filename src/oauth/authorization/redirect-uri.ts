/**
 * Redirect URI matching (RFC 9700 §4.1.1, OAuth 2.1 §2.3.1): exact string comparison with what the client
 * registered. No normalisation of case, trailing slashes, paths or queries: every normalisation is a way to reach a
 * URI the client did not register. The single exception is RFC 8252 §7.3: for loopback IP literals (127.0.0.1 and
 * [::1]) over http the port is ignored, because native apps listen on whatever port the OS gives them.
 */

/** Matches http://127.0.0.1[:port]rest and http://[::1][:port]rest; the port is split out verbatim. */
const LOOPBACK = /^http:\/\/(127\.0\.0\.1|\[::1\])(?::(\d{1,5}))?([/?][^#]*)?$/;

function withoutPort(uri: string): string | undefined {
  const m = LOOPBACK.exec(uri);
  if (!m) return undefined;
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return undefined;
  return `http://${m[1]}${m[3] ?? ''}`;
}

export function isLoopbackRedirect(uri: string): boolean {
  return withoutPort(uri) !== undefined;
}

export function redirectUriAllowed(registered: readonly string[], requested: string): boolean {
  if (requested.includes('#')) return false;
  if (registered.includes(requested)) return true;
  const bare = withoutPort(requested);
  if (bare === undefined) return false;
  return registered.some((r) => withoutPort(r) === bare);
}

/** Appends authorization response parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2). */
export function withQuery(redirectUri: string, params: Record<string, string | undefined>): string {
  const u = new URL(redirectUri);
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.searchParams.append(k, v);
  return u.href;
}
