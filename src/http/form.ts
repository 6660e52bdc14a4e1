import { InvalidRequest, InvalidTarget } from '../errors/oauth-error.ts';

/** Marker for a body that was not application/x-www-form-urlencoded. */
export const NOT_FORM = Symbol('not-form');

export interface RawBody {
  [NOT_FORM]: true;
  raw: string;
  contentType: string | undefined;
}

/**
 * Parses application/x-www-form-urlencoded strictly: every parameter at most once (RFC 6749 §3.1/§3.2 "parameters
 * MUST NOT be included more than once"; a repeated resource is refused as invalid_target since we issue one audience
 * per token), bounded parameter size, valid percent-encoding and UTF-8.
 */
export function parseForm(body: string, maxParamBytes: number): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  if (body.length === 0) return out;
  for (const pair of body.split('&')) {
    const kv = decodePair(pair, maxParamBytes);
    if (!kv) continue;
    const [key, val] = kv;
    if (key in out) {
      if (key === 'resource') throw new InvalidTarget('request a token for one resource at a time');
      throw new InvalidRequest(`parameter ${key.slice(0, 40)} is repeated`);
    }
    // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
    if (val === '') continue;
    out[key] = val;
  }
  return out;
}

/**
 * Parses a query string or form body keeping the first value of each parameter and listing repeated names, for the
 * endpoints that must answer a repeated parameter with a redirect to the client rather than a bare 400
 * (/authorize, /logout): the caller decides once it knows whether the redirect target can be trusted.
 */
export function parseParamsLenient(
  body: string,
  maxParamBytes: number,
): { params: Record<string, string>; repeated: string[] } {
  const params: Record<string, string> = Object.create(null);
  const repeated: string[] = [];
  const seen = new Set<string>();
  if (body.length === 0) return { params, repeated };
  for (const pair of body.split('&')) {
    const kv = decodePair(pair, maxParamBytes);
    if (!kv) continue;
    const [key, val] = kv;
    if (seen.has(key)) {
      if (!repeated.includes(key)) repeated.push(key);
      continue;
    }
    seen.add(key);
    // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
    if (val !== '') params[key] = val;
  }
  return { params, repeated };
}

/**
 * One `name=value` pair, size-checked and percent-decoded (+ is a space); undefined for an empty pair. Both parsers
 * share it so the strict and the lenient endpoints refuse exactly the same malformed input.
 */
function decodePair(pair: string, maxParamBytes: number): [string, string] | undefined {
  if (pair === '') return undefined;
  const eq = pair.indexOf('=');
  const rawKey = eq === -1 ? pair : pair.slice(0, eq);
  const rawVal = eq === -1 ? '' : pair.slice(eq + 1);
  if (rawKey.length > 256 || rawVal.length > maxParamBytes * 3)
    throw new InvalidRequest(`parameter exceeds ${maxParamBytes} bytes`);
  let key: string;
  let val: string;
  try {
    key = decodeURIComponent(rawKey.replace(/\+/g, ' '));
    val = decodeURIComponent(rawVal.replace(/\+/g, ' '));
  } catch {
    throw new InvalidRequest('malformed percent-encoding in the form body');
  }
  if (Buffer.byteLength(val) > maxParamBytes)
    throw new InvalidRequest(`parameter ${key.slice(0, 40)} exceeds ${maxParamBytes} bytes`);
  return [key, val];
}

/** Marker for a body parsed by parseParamsLenient. */
export const LENIENT_FORM = Symbol('lenient-form');

export interface LenientBody {
  [LENIENT_FORM]: true;
  params: Record<string, string>;
  repeated: string[];
}
