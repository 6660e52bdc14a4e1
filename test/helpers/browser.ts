/**
 * A tiny browser for black-box page tests: a cookie jar, manual redirects, and form helpers. Real-browser behaviour
 * (CSP enforcement, rendering) is covered separately with Playwright; this drives the HTTP contract.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Agent, fetch as undiciFetch } from 'undici';

export interface Res {
  status: number;
  headers: Headers;
  body: string;
  location: string | undefined;
  url: string;
}

export class Browser {
  readonly base: string;
  readonly jar = new Map<string, string>();
  /** Every Set-Cookie header seen, raw (to check attributes). */
  readonly setCookies: string[] = [];
  /** Connects from this loopback address (e.g. 127.0.0.2) so per-IP limits can be tested apart from each other. */
  private readonly agent: Agent | undefined;
  constructor(base: string, opts: { localAddress?: string } = {}) {
    this.base = base;
    this.agent = opts.localAddress ? new Agent({ localAddress: opts.localAddress }) : undefined;
  }

  private abs(url: string): string {
    return url.startsWith('http') ? url : this.base + url;
  }

  private store(h: Headers): void {
    for (const c of h.getSetCookie()) {
      this.setCookies.push(c);
      const [pair, ...attrs] = c.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      if (attrs.some((a) => /^\s*max-age=0\s*$/i.test(a)) || value === '') this.jar.delete(name);
      else this.jar.set(name, value);
    }
  }

  cookieHeader(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async request(
    method: string,
    url: string,
    body?: Record<string, string> | string,
    extra: Record<string, string> = {},
  ): Promise<Res> {
    const headers: Record<string, string> = { ...extra };
    if (this.jar.size) headers.cookie = this.cookieHeader();
    let payload: string | undefined;
    if (body !== undefined) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      payload = typeof body === 'string' ? body : new URLSearchParams(body).toString();
    }
    const full = this.abs(url);
    const r = this.agent
      ? ((await undiciFetch(full, {
          method,
          headers,
          body: payload,
          redirect: 'manual',
          dispatcher: this.agent,
        })) as unknown as Response)
      : await fetch(full, { method, headers, body: payload, redirect: 'manual' });
    this.store(r.headers);
    return {
      status: r.status,
      headers: r.headers,
      body: await r.text(),
      location: r.headers.get('location') ?? undefined,
      url: full,
    };
  }

  get(url: string): Promise<Res> {
    return this.request('GET', url);
  }

  post(url: string, body: Record<string, string> | string): Promise<Res> {
    return this.request('POST', url, body);
  }

  /** Follows redirects on this server (relative or same origin); stops at the first that leaves it. */
  async follow(res: Res, max = 10): Promise<Res> {
    let r = res;
    for (let i = 0; i < max && r.location !== undefined && r.status >= 300 && r.status < 400; i++) {
      const next = new URL(r.location, r.url);
      if (next.origin !== new URL(this.base).origin) return r;
      r = await this.get(next.href);
    }
    return r;
  }
}

/** Hidden and named inputs of the first form whose action matches (or the first form). */
export function formFields(html: string, action?: string): Record<string, string> {
  const forms = [...html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/g)];
  const form = forms.find((f) => action === undefined || f[1]!.includes(`action="${action}"`));
  if (!form) throw new Error(`no form${action ? ` with action ${action}` : ''} in:\n${html.slice(0, 2000)}`);
  const out: Record<string, string> = {};
  for (const m of form[2]!.matchAll(/<input\b([^>]*)>/g)) {
    const name = /\bname="([^"]*)"/.exec(m[1]!)?.[1];
    const value = /\bvalue="([^"]*)"/.exec(m[1]!)?.[1] ?? '';
    if (name) out[name] = unescapeHtml(value);
  }
  return out;
}

export function unescapeHtml(s: string): string {
  return s
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** Query parameters of a redirect Location. */
export function queryOf(location: string | undefined): Record<string, string> {
  if (!location) throw new Error('no Location header');
  return Object.fromEntries(new URL(location).searchParams);
}
