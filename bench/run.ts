/**
 * Token endpoint benchmark: client_credentials issuance against Portcullis, oidc-provider 9 (configured
 * equivalently: JWT access tokens via resource indicators, ES256, client_secret_basic) and a bare node:http server
 * (the ceiling), in one run, alternating targets (A B C, B C A, C A B, …) at several connection counts. On request,
 * also Portcullis with its audit sealer off (portcullis-noseal), to measure what sealing costs.
 *
 *   npm run bench -- [--rounds 3] [--duration 10] [--warmup 3] [--connections 10,50]
 *                    [--targets portcullis,oidc-provider,node-http[,portcullis-noseal]] [--out bench/results/latest.json]
 *                    [--quiet-wait 60] [--noise-limit 25] [--noise-retries 2] [--keep-data]
 *
 * Each flag also reads an env var (BENCH_ROUNDS, BENCH_DURATION, BENCH_WARMUP, BENCH_CONNECTIONS, BENCH_TARGETS,
 * BENCH_OUT, BENCH_QUIET_WAIT, BENCH_NOISE_LIMIT, BENCH_NOISE_RETRIES); flags win. bench/README.md explains
 * what is measured and how. Loopback only; every child is killed at the end, also on error or when the time budget
 * runs out. Not part of `npm test`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon, { type Client, type Result } from 'autocannon';
import Database from 'better-sqlite3';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const benchDir = dirname(fileURLToPath(import.meta.url));
const repoDir = resolve(benchDir, '..');

// ---------------------------------------------------------------- options

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    targets: { type: 'string' },
    out: { type: 'string' },
    'keep-data': { type: 'boolean' },
    'quiet-wait': { type: 'string' },
    'noise-limit': { type: 'string' },
    'noise-retries': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  allowPositionals: false,
});

if (flags.help) {
  process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0] ?? '');
  process.stdout.write('*/\n');
  process.exit(0);
}

function positiveInt(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0)
    throw new Error(`${name}: expected a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

const ALL_TARGETS = ['portcullis', 'oidc-provider', 'node-http', 'portcullis-noseal'] as const;
type TargetName = (typeof ALL_TARGETS)[number];
/** Measured when --targets is not given; portcullis-noseal (sealer off) is asked for explicitly. */
const DEFAULT_TARGETS: TargetName[] = ['portcullis', 'oidc-provider', 'node-http'];
/** Portcullis servers: a SQLite data dir, jti tracking and the durability check. */
const isPortcullis = (name: TargetName) => name === 'portcullis' || name === 'portcullis-noseal';

const opts = {
  rounds: positiveInt('rounds', flags.rounds ?? process.env.BENCH_ROUNDS, 3),
  durationS: positiveInt('duration', flags.duration ?? process.env.BENCH_DURATION, 10),
  warmupS: positiveInt('warmup', flags.warmup ?? process.env.BENCH_WARMUP, 3),
  connections: (flags.connections ?? process.env.BENCH_CONNECTIONS ?? '10,50')
    .split(',')
    .map((c) => positiveInt('connections', c.trim(), 0)),
  targets: (flags.targets ?? process.env.BENCH_TARGETS ?? DEFAULT_TARGETS.join(',')).split(',').map((t) => {
    const name = t.trim();
    if (!(ALL_TARGETS as readonly string[]).includes(name)) {
      throw new Error(`targets: unknown target ${JSON.stringify(name)} (known: ${ALL_TARGETS.join(', ')})`);
    }
    return name as TargetName;
  }),
  out: resolve(flags.out ?? process.env.BENCH_OUT ?? join(benchDir, 'results', 'latest.json')),
  keepData: flags['keep-data'] ?? false,
  /** Seconds to wait, before starting, for the machine to go idle (other work skews the numbers). 0 = don't. */
  quietWaitS: Number(flags['quiet-wait'] ?? process.env.BENCH_QUIET_WAIT ?? 60),
  /**
   * A measured run during which other processes used more than this much CPU (% of one core) is discarded and
   * run again, after waiting for the machine to go idle, at most noiseRetries times.
   */
  noiseLimitPct: Number(flags['noise-limit'] ?? process.env.BENCH_NOISE_LIMIT ?? 25),
  noiseRetries: Number(flags['noise-retries'] ?? process.env.BENCH_NOISE_RETRIES ?? 2),
};

const CLIENT_ID = 'svc';
const CLIENT_SECRET = `bench-${randomBytes(18).toString('base64url')}`;
const RESOURCE = 'https://api.example.com';
const SCOPE = 'orders:read orders:write';
const TTL_S = 600;
const HOST = '127.0.0.1';
const AUTH = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`;
const BODY = new URLSearchParams({ grant_type: 'client_credentials', resource: RESOURCE, scope: SCOPE }).toString();

// ---------------------------------------------------------------- children

interface Running {
  name: TargetName;
  url: string;
  child: ChildProcess;
  /** Last lines the child printed (stdout and stderr), for diagnostics. */
  output: string[];
  /** Log lines at warn level or above (Portcullis logs pino JSON; level >= 40). */
  warnings: number;
  jwt: boolean;
  dataDir?: string;
  dbPath?: string;
}

const children = new Set<ChildProcess>();
/** Children this script is stopping on purpose (any other exit is reported as unexpected). */
const stopping = new WeakSet<ChildProcess>();
/** Temporary Portcullis data directories, removed at the end unless --keep-data. */
const dataDirs: string[] = [];

function killAll(signal: NodeJS.Signals): void {
  for (const c of children) {
    stopping.add(c);
    if (c.exitCode === null && c.signalCode === null) c.kill(signal);
  }
}

process.on('exit', () => killAll('SIGKILL'));
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`bench: ${sig}, stopping children\n`);
    killAll('SIGKILL');
    process.exit(130);
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, HOST, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') return reject(new Error('no port'));
      srv.close(() => resolvePort(addr.port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function spawnTarget(
  name: TargetName,
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd: string,
): Omit<Running, 'url' | 'jwt'> & { listening: Promise<string> } {
  // process.execPath is the Node 24 binary that runs this script (npm run puts node_modules/.bin first on PATH).
  const child = spawn(process.execPath, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const running = { name, child, output: [] as string[], warnings: 0 };
  let resolveUrl: (u: string) => void = () => {};
  let rejectUrl: (e: Error) => void = () => {};
  const listening = new Promise<string>((res, rej) => {
    resolveUrl = res;
    rejectUrl = rej;
  });
  const onLine = (line: string) => {
    if (!line) return;
    running.output.push(line);
    if (running.output.length > 40) running.output.shift();
    if (line.startsWith('{')) {
      try {
        const rec = JSON.parse(line) as { msg?: unknown; url?: unknown; level?: unknown };
        if (rec.msg === 'listening' && typeof rec.url === 'string') resolveUrl(rec.url);
        if (typeof rec.level === 'number' && rec.level >= 40) running.warnings++;
      } catch {
        // not JSON: keep it as plain output
      }
    }
  };
  for (const stream of [child.stdout, child.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buf += chunk;
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
      }
    });
  }
  child.once('exit', (code, signal) => {
    children.delete(child);
    if (!stopping.has(child)) {
      process.stderr.write(`bench: ${name} (pid ${child.pid}) exited unexpectedly: code ${code}, signal ${signal}\n`);
    }
    rejectUrl(new Error(`${name} exited (code ${code}, signal ${signal}) before it was ready`));
  });
  child.once('error', (e) => rejectUrl(e));
  return { ...running, listening };
}

/** Resolves with the URL once the child logs "listening" or answers `probe` with 2xx, whichever comes first. */
async function waitReady(
  spawned: ReturnType<typeof spawnTarget>,
  fallbackUrl: string,
  probePath: string | null,
  timeoutMs: number,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let failed: Error | undefined;
  let url: string | undefined;
  spawned.listening.then(
    (u) => {
      url = u;
    },
    (e: Error) => {
      failed = e;
    },
  );
  while (Date.now() < deadline) {
    if (failed) throw failed;
    if (url) return url;
    if (probePath) {
      try {
        const res = await fetch(fallbackUrl + probePath, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.ok) return fallbackUrl;
      } catch {
        // not up yet
      }
    }
    await sleep(100);
  }
  throw new Error(`${spawned.name} not ready after ${timeoutMs} ms`);
}

async function stopChild(c: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  stopping.add(c);
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill(signal);
  const timer = setTimeout(() => c.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

async function startTarget(name: TargetName): Promise<Running> {
  const port = await freePort();
  const fallbackUrl = `http://${HOST}:${port}`;
  const peerEnv = {
    HOST,
    PORT: String(port),
    CLIENT_ID,
    CLIENT_SECRET,
    RESOURCE,
    SCOPE,
  };
  if (name === 'node-http') {
    const s = spawnTarget(name, [join(benchDir, 'peers', 'node-http.ts')], peerEnv, repoDir);
    const url = await waitReady(s, fallbackUrl, null, 15_000);
    return { ...s, url, jwt: false };
  }
  if (name === 'oidc-provider') {
    const s = spawnTarget(name, [join(benchDir, 'peers', 'oidc-provider.ts')], peerEnv, repoDir);
    const url = await waitReady(s, fallbackUrl, null, 30_000);
    return { ...s, url, jwt: true };
  }
  // Portcullis: fresh SQLite data dir, a KEK from the environment, log level warn. The audit sealer runs with its
  // defaults (every 1 s) in 'portcullis' and is off in 'portcullis-noseal'.
  const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
  dataDirs.push(dataDir);
  const dbPath = join(dataDir, 'portcullis.db');
  const configPath = join(dataDir, 'config.yaml');
  // JSON is valid YAML; every string is JSON-quoted so no value needs YAML escaping.
  const q = JSON.stringify;
  writeFileSync(
    configPath,
    [
      `issuer: ${q(fallbackUrl)}`,
      `listen: { host: ${q(HOST)}, port: ${port} }`,
      `storage: { url: ${q(`sqlite:${dbPath}`)} }`,
      `keys: { algorithm: ES256, kek_file: ${q(join(dataDir, 'kek'))} }`,
      `tokens: { access_token_ttl: ${TTL_S}s }`,
      'log: { level: warn }',
      ...(name === 'portcullis-noseal' ? ['audit: { seal: false }'] : []),
      // One load generator on one address is not one client: lift the per-address /token limit out of reach but
      // keep the limiter in the path, so its cost is measured.
      "throttle: { token_per_ip: { limit: 1000000, window: '1s' } }",
      'resources:',
      `  - identifier: ${q(RESOURCE)}`,
      `    scopes: ${q(SCOPE.split(' '))}`,
      'clients:',
      `  - client_id: ${q(CLIENT_ID)}`,
      `    client_secret: ${q(CLIENT_SECRET)}`,
      '    token_endpoint_auth_method: client_secret_basic',
      '    grant_types: [client_credentials]',
      `    scope: ${q(SCOPE)}`,
      `    resources: [${q(RESOURCE)}]`,
      '',
    ].join('\n'),
  );
  const s = spawnTarget(
    name,
    [join(repoDir, 'src', 'main.ts'), 'start', '--config', configPath],
    { PORTCULLIS_KEK: randomBytes(32).toString('base64url') },
    dataDir,
  );
  try {
    const url = await waitReady(s, fallbackUrl, '/readyz', 60_000);
    return { ...s, url, jwt: true, dataDir, dbPath };
  } catch (e) {
    await stopChild(s.child, 'SIGKILL', 0);
    throw new Error(`${(e as Error).message}\n--- last output of portcullis ---\n${s.output.join('\n')}`);
  }
}

// ---------------------------------------------------------------- token checks

interface TokenCheck {
  ok: boolean;
  jti?: string;
  alg?: string;
  problem?: string;
  /** exp - iat was TTL - 1 (tolerated, counted). */
  lifetimeShort?: boolean;
}

function b64urlJson(part: string | undefined): Record<string, unknown> {
  if (!part) throw new Error('missing JWT part');
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Cheap structural check of one token response (signatures are verified on samples, see verifySample). */
function checkTokenResponse(body: string, jwt: boolean, issuer: string): TokenCheck {
  let res: Record<string, unknown>;
  try {
    res = JSON.parse(body) as Record<string, unknown>;
  } catch {
    return { ok: false, problem: 'body is not JSON' };
  }
  const at = res.access_token;
  if (typeof at !== 'string' || at.length === 0) return { ok: false, problem: 'no access_token' };
  if (typeof res.token_type !== 'string' || res.token_type.toLowerCase() !== 'bearer') {
    return { ok: false, problem: `token_type ${String(res.token_type)}` };
  }
  if (res.expires_in !== TTL_S) return { ok: false, problem: `expires_in ${String(res.expires_in)}` };
  if (!jwt) return { ok: true };
  const parts = at.split('.');
  if (parts.length !== 3) return { ok: false, problem: 'access_token is not a JWS compact serialization' };
  try {
    const header = b64urlJson(parts[0]);
    const claims = b64urlJson(parts[1]);
    const alg = String(header.alg);
    if (alg !== 'ES256') return { ok: false, alg, problem: `alg ${alg}` };
    if (String(header.typ).toLowerCase() !== 'at+jwt') return { ok: false, alg, problem: `typ ${String(header.typ)}` };
    if (Buffer.from(parts[2] ?? '', 'base64url').length !== 64) return { ok: false, alg, problem: 'ES256 sig size' };
    const jti = claims.jti;
    if (typeof jti !== 'string' || !jti) return { ok: false, alg, problem: 'no jti' };
    const aud = claims.aud;
    if (aud !== RESOURCE && !(Array.isArray(aud) && aud.includes(RESOURCE)))
      return { ok: false, alg, jti, problem: 'aud' };
    if (claims.iss !== issuer) return { ok: false, alg, jti, problem: `iss ${String(claims.iss)}` };
    if (claims.sub !== CLIENT_ID || claims.client_id !== CLIENT_ID)
      return { ok: false, alg, jti, problem: 'sub/client_id' };
    if (claims.scope !== SCOPE) return { ok: false, alg, jti, problem: `scope ${String(claims.scope)}` };
    // oidc-provider reads the clock separately for iat and exp, so across a second boundary exp - iat is 599.
    const lifetime = Number(claims.exp) - Number(claims.iat);
    if (lifetime !== TTL_S && lifetime !== TTL_S - 1)
      return { ok: false, alg, jti, problem: `exp - iat = ${lifetime}` };
    return { ok: true, jti, alg, lifetimeShort: lifetime !== TTL_S };
  } catch (e) {
    return { ok: false, problem: `undecodable JWT: ${(e as Error).message}` };
  }
}

async function fetchJwks(url: string): Promise<ReturnType<typeof createLocalJWKSet>> {
  let jwksUri = `${url}/jwks`;
  try {
    const disc = await fetch(`${url}/.well-known/openid-configuration`);
    if (disc.ok) {
      const meta = (await disc.json()) as { jwks_uri?: unknown };
      if (typeof meta.jwks_uri === 'string') jwksUri = meta.jwks_uri;
    } else {
      await disc.arrayBuffer();
    }
  } catch {
    // fall back to /jwks
  }
  const res = await fetch(jwksUri);
  if (!res.ok) throw new Error(`GET ${jwksUri}: ${res.status}`);
  return createLocalJWKSet((await res.json()) as Parameters<typeof createLocalJWKSet>[0]);
}

/** Full signature + claims verification with jose against the target's published JWKS. */
async function verifyTokens(t: Running, bodies: string[]): Promise<{ verified: number; failures: string[] }> {
  const jwks = await fetchJwks(t.url);
  const failures: string[] = [];
  let verified = 0;
  for (const body of bodies) {
    const at = (JSON.parse(body) as { access_token: string }).access_token;
    try {
      await jwtVerify(at, jwks, {
        issuer: t.url,
        audience: RESOURCE,
        typ: 'at+jwt',
        algorithms: ['ES256'],
        subject: CLIENT_ID,
      });
      verified++;
    } catch (e) {
      failures.push(`${(e as Error).message} (header ${JSON.stringify(decodeProtectedHeader(at))})`);
    }
  }
  return { verified, failures };
}

async function preflight(t: Running): Promise<{ status: number; sample: Record<string, unknown> }> {
  const res = await fetch(`${t.url}/token`, {
    method: 'POST',
    headers: { authorization: AUTH, 'content-type': 'application/x-www-form-urlencoded' },
    body: BODY,
  });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${t.name}: preflight POST /token -> ${res.status} ${text}`);
  const check = checkTokenResponse(text, t.jwt, t.url);
  if (!check.ok) throw new Error(`${t.name}: preflight token rejected: ${check.problem}\n${text}`);
  if (isPortcullis(t.name) && check.jti) jtisOf(t.name).push(check.jti);
  if (t.jwt) {
    const v = await verifyTokens(t, [text]);
    if (v.verified !== 1) throw new Error(`${t.name}: preflight token signature: ${v.failures.join('; ')}`);
  }
  const parsed = JSON.parse(text) as Record<string, unknown>;
  const sample: Record<string, unknown> = { ...parsed };
  if (t.jwt && typeof parsed.access_token === 'string') {
    const [h, p] = parsed.access_token.split('.');
    sample.access_token_header = b64urlJson(h);
    sample.access_token_claims = b64urlJson(p);
    delete sample.access_token;
  }
  return { status: res.status, sample };
}

// ---------------------------------------------------------------- measuring

function readCpuTicks(pid: number | undefined): number | null {
  if (pid === undefined) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks
  } catch {
    return null;
  }
}
const CLK_TCK = 100;

/** Whole-machine CPU time from /proc/stat, in clock ticks: [busy, total]. */
function readSystemTicks(): [number, number] | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return [total - idle, total];
  } catch {
    return null;
  }
}

/** Percent of one core used by everything on the machine over `ms`. */
async function machineBusyPct(ms: number): Promise<number | null> {
  const a = readSystemTicks();
  await sleep(ms);
  const b = readSystemTicks();
  if (!a || !b) return null;
  return ((b[0] - a[0]) / CLK_TCK / (ms / 1000)) * 100;
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx] ?? Number.NaN;
}

interface RunResult {
  target: TargetName;
  /** 'discarded' = a measured run redone because other work on the machine used more than the noise limit. */
  phase: 'warmup' | 'measure' | 'discarded';
  round: number;
  connections: number;
  duration_s: number;
  responses: number;
  ok_2xx: number;
  non_2xx: number;
  status_codes: Record<string, number>;
  errors: number;
  timeouts: number;
  /** Requests written whose responses never arrived because the run stopped (the server may still have served them). */
  in_flight_at_stop: number;
  tokens_per_s: number;
  latency_ms: { p50: number; p90: number; p99: number; p999: number; mean: number; max: number };
  autocannon_rounded_ms: { p50: number; p99: number };
  server_cpu_pct: number | null;
  /** Server CPU time (all threads) per token issued, µs: steadier than tokens/s when the machine is shared. */
  server_cpu_us_per_token: number | null;
  loadgen_cpu_pct: number;
  /** CPU used on the machine by processes other than the server and the load generator (noise), % of one core. */
  other_cpu_pct: number | null;
  invalid_tokens: number;
  invalid_examples: string[];
  /** Tokens whose exp - iat was one second short of the TTL (tolerated). */
  lifetime_short_by_1s: number;
  duplicate_jti: number;
  signature_sample: { verified: number; failures: string[] } | null;
}

/** jti of every 2xx token each Portcullis target handed out (warm-up included), for the durability check. */
const portcullisJtis = new Map<TargetName, string[]>();
function jtisOf(name: TargetName): string[] {
  let list = portcullisJtis.get(name);
  if (!list) {
    list = [];
    portcullisJtis.set(name, list);
  }
  return list;
}

async function runLoad(t: Running, connections: number, durationS: number, phase: RunResult['phase'], round: number) {
  const latencies: number[] = [];
  const okBodies: string[] = [];
  let sent = 0;
  let received = 0;
  const setupClient = (client: Client) => {
    client.on('request', () => {
      sent++;
    });
    client.on('response', (_status: number, _bytes: number, ms: number) => {
      received++;
      latencies.push(ms);
    });
  };
  const cpu0 = readCpuTicks(t.child.pid);
  const sys0 = readSystemTicks();
  const lg0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await new Promise<Result>((res, rej) => {
    autocannon(
      {
        url: t.url,
        connections,
        pipelining: 1,
        duration: durationS,
        timeout: 10,
        setupClient,
        requests: [
          {
            method: 'POST',
            path: '/token',
            headers: { authorization: AUTH, 'content-type': 'application/x-www-form-urlencoded' },
            body: BODY,
            onResponse: (status, body) => {
              if (status >= 200 && status < 300) okBodies.push(body);
            },
          },
        ],
      },
      (err, r) => (err ? rej(err) : res(r)),
    );
  });
  const wall = (performance.now() - t0) / 1000;
  const cpu1 = readCpuTicks(t.child.pid);
  const sys1 = readSystemTicks();
  const lg = process.cpuUsage(lg0);
  const serverCpu = cpu0 !== null && cpu1 !== null ? ((cpu1 - cpu0) / CLK_TCK / wall) * 100 : null;
  const loadgenCpu = ((lg.user + lg.system) / 1e6 / wall) * 100;
  const machineCpu = sys0 && sys1 ? ((sys1[0] - sys0[0]) / CLK_TCK / wall) * 100 : null;

  const sorted = Float64Array.from(latencies).sort();
  const mean = latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length);
  const durationS_ = result.duration > 0 ? result.duration : wall;

  let invalid = 0;
  let lifetimeShort = 0;
  const invalidExamples: string[] = [];
  const jtis = new Set<string>();
  let dup = 0;
  for (const body of okBodies) {
    const c = checkTokenResponse(body, t.jwt, t.url);
    if (!c.ok) {
      invalid++;
      if (invalidExamples.length < 3) invalidExamples.push(`${c.problem}: ${body.slice(0, 300)}`);
    }
    if (c.lifetimeShort) lifetimeShort++;
    if (c.jti) {
      if (jtis.has(c.jti)) dup++;
      jtis.add(c.jti);
      if (isPortcullis(t.name)) jtisOf(t.name).push(c.jti);
    }
  }
  let signatureSample: RunResult['signature_sample'] = null;
  if (t.jwt && okBodies.length > 0) {
    const sample: string[] = [];
    const step = Math.max(1, Math.floor(okBodies.length / 50));
    for (let i = 0; i < okBodies.length; i += step) sample.push(okBodies[i] as string);
    signatureSample = await verifyTokens(t, sample);
  }

  const statusCodes: Record<string, number> = {};
  for (const [code, v] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = v.count;
  const ok2xx = result['2xx'];
  const run: RunResult = {
    target: t.name,
    phase,
    round,
    connections,
    duration_s: durationS_,
    responses: received,
    ok_2xx: ok2xx,
    non_2xx: result.non2xx,
    status_codes: statusCodes,
    errors: result.errors,
    timeouts: result.timeouts,
    in_flight_at_stop: Math.max(0, sent - received),
    tokens_per_s: ok2xx / durationS_,
    latency_ms: {
      p50: percentile(sorted, 0.5),
      p90: percentile(sorted, 0.9),
      p99: percentile(sorted, 0.99),
      p999: percentile(sorted, 0.999),
      mean,
      max: sorted[sorted.length - 1] ?? Number.NaN,
    },
    autocannon_rounded_ms: { p50: result.latency.p50, p99: result.latency.p99 },
    server_cpu_pct: serverCpu,
    server_cpu_us_per_token: serverCpu !== null && ok2xx > 0 ? (serverCpu / 100 / (ok2xx / durationS_)) * 1e6 : null,
    loadgen_cpu_pct: loadgenCpu,
    other_cpu_pct: machineCpu !== null && serverCpu !== null ? Math.max(0, machineCpu - serverCpu - loadgenCpu) : null,
    invalid_tokens: invalid,
    invalid_examples: invalidExamples,
    lifetime_short_by_1s: lifetimeShort,
    duplicate_jti: dup,
    signature_sample: signatureSample,
  };
  return run;
}

// ---------------------------------------------------------------- summary

function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

interface Summary {
  target: TargetName;
  connections: number;
  rounds: number;
  tokens_per_s_median: number;
  tokens_per_s_min: number;
  tokens_per_s_max: number;
  p50_ms_median: number;
  p99_ms_median: number;
  non_2xx_total: number;
  errors_total: number;
  invalid_tokens_total: number;
  server_cpu_pct_median: number | null;
  server_cpu_us_per_token_median: number | null;
  loadgen_cpu_pct_median: number;
  other_cpu_pct_max: number | null;
}

function summarize(runs: RunResult[]): Summary[] {
  const out: Summary[] = [];
  for (const target of opts.targets) {
    for (const connections of opts.connections) {
      const rs = runs.filter((r) => r.phase === 'measure' && r.target === target && r.connections === connections);
      if (rs.length === 0) continue;
      const tps = rs.map((r) => r.tokens_per_s);
      const cpu = rs.map((r) => r.server_cpu_pct).filter((x): x is number => x !== null);
      out.push({
        target,
        connections,
        rounds: rs.length,
        tokens_per_s_median: median(tps),
        tokens_per_s_min: Math.min(...tps),
        tokens_per_s_max: Math.max(...tps),
        p50_ms_median: median(rs.map((r) => r.latency_ms.p50)),
        p99_ms_median: median(rs.map((r) => r.latency_ms.p99)),
        non_2xx_total: rs.reduce((a, r) => a + r.non_2xx, 0),
        errors_total: rs.reduce((a, r) => a + r.errors, 0),
        invalid_tokens_total: rs.reduce((a, r) => a + r.invalid_tokens, 0),
        server_cpu_pct_median: cpu.length ? median(cpu) : null,
        server_cpu_us_per_token_median: (() => {
          const us = rs.map((r) => r.server_cpu_us_per_token).filter((x): x is number => x !== null);
          return us.length ? median(us) : null;
        })(),
        loadgen_cpu_pct_median: median(rs.map((r) => r.loadgen_cpu_pct)),
        other_cpu_pct_max: rs.some((r) => r.other_cpu_pct !== null)
          ? Math.max(...rs.map((r) => r.other_cpu_pct ?? 0))
          : null,
      });
    }
  }
  return out;
}

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
    : '-';

function markdownTable(summary: Summary[]): string {
  const lines = [
    '| target | conns | tokens/s (median) | min–max | p50 ms | p99 ms | non-2xx | CPU server / load-gen | server CPU µs/token |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of summary) {
    lines.push(
      `| ${s.target} | ${s.connections} | ${fmt(s.tokens_per_s_median)} | ${fmt(s.tokens_per_s_min)}–${fmt(s.tokens_per_s_max)} | ${fmt(s.p50_ms_median, 2)} | ${fmt(s.p99_ms_median, 2)} | ${s.non_2xx_total + s.errors_total} | ${s.server_cpu_pct_median === null ? '-' : `${fmt(s.server_cpu_pct_median)}%`} / ${fmt(s.loadgen_cpu_pct_median)}% | ${s.server_cpu_us_per_token_median === null ? '-' : fmt(s.server_cpu_us_per_token_median)} |`,
    );
  }
  return lines.join('\n');
}

interface Ratio {
  connections: number;
  ratio_of_medians: number;
  per_round: number[];
  median_of_per_round: number;
  goal: number;
  goal_met: boolean;
}

/** a / b tokens/s per connection count (both medians and per round), against a goal on the ratio of medians. */
function ratios(summary: Summary[], runs: RunResult[], a: TargetName, b: TargetName, goal: number): Ratio[] {
  const out: Ratio[] = [];
  for (const connections of opts.connections) {
    const p = summary.find((s) => s.target === a && s.connections === connections);
    const o = summary.find((s) => s.target === b && s.connections === connections);
    if (!p || !o) continue;
    const perRound: number[] = [];
    const measured = (target: TargetName, round: number) =>
      runs.find(
        (r) => r.phase === 'measure' && r.target === target && r.connections === connections && r.round === round,
      );
    for (let round = 1; round <= opts.rounds; round++) {
      const pr = measured(a, round);
      const or = measured(b, round);
      if (pr && or) perRound.push(pr.tokens_per_s / or.tokens_per_s);
    }
    const ratio = p.tokens_per_s_median / o.tokens_per_s_median;
    out.push({
      connections,
      ratio_of_medians: ratio,
      per_round: perRound,
      median_of_per_round: median(perRound),
      goal,
      goal_met: ratio >= goal,
    });
  }
  return out;
}

// ---------------------------------------------------------------- durability

interface Durability {
  tokens_received: number;
  found_in_events: number;
  missing: number;
  missing_examples: string[];
  token_issued_rows: number;
  /** Rows for tokens whose responses the load generator dropped when a run stopped (bounded by in-flight). */
  rows_without_received_token: number;
  in_flight_at_stop_total: number;
  server_stop: string;
  /** Audit log at the kill: events with a leaf index, events without, signed checkpoints, largest tree size. */
  audit: { sealed: number; unsealed: number; checkpoints: number; tree_size: number };
}

function checkDurability(name: TargetName, dbPath: string, inFlight: number, stopHow: string): Durability {
  const db = new Database(dbPath, { fileMustExist: true });
  try {
    const rows = db.prepare("SELECT jti FROM events WHERE type = 'token.issued'").pluck().all() as (string | null)[];
    const stored = new Set<string>();
    for (const j of rows) if (j) stored.add(j);
    let found = 0;
    const missingExamples: string[] = [];
    const jtis = jtisOf(name);
    for (const j of jtis) {
      if (stored.has(j)) found++;
      else if (missingExamples.length < 5) missingExamples.push(j);
    }
    const count = (q: string) => Number(db.prepare(q).pluck().get() ?? 0);
    return {
      tokens_received: jtis.length,
      found_in_events: found,
      missing: jtis.length - found,
      missing_examples: missingExamples,
      token_issued_rows: rows.length,
      rows_without_received_token: rows.length - found,
      in_flight_at_stop_total: inFlight,
      server_stop: stopHow,
      audit: {
        sealed: count('SELECT count(*) FROM events WHERE leaf_index IS NOT NULL'),
        unsealed: count('SELECT count(*) FROM events WHERE leaf_index IS NULL'),
        checkpoints: count('SELECT count(*) FROM audit_checkpoints'),
        tree_size: count('SELECT coalesce(max(tree_size), 0) FROM audit_checkpoints'),
      },
    };
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------- main

function gitDescribe(): string | null {
  try {
    const git = (...args: string[]) =>
      execFileSync('git', args, { cwd: repoDir, stdio: ['ignore', 'pipe', 'ignore'] })
        .toString()
        .trim();
    const head = git('rev-parse', '--short', 'HEAD');
    return git('status', '--porcelain', '--', 'src') ? `${head}+uncommitted src changes` : head;
  } catch {
    return null;
  }
}

function pkgVersion(name: string): string | null {
  try {
    const p = JSON.parse(readFileSync(join(repoDir, 'node_modules', name, 'package.json'), 'utf8')) as {
      version?: string;
    };
    return p.version ?? null;
  } catch {
    return null;
  }
}

/** Waits until the whole machine uses less than 20% of a core (sampled over 2 s), at most maxS seconds. */
async function waitQuiet(maxS: number): Promise<number | null> {
  const until = Date.now() + maxS * 1000;
  let busy: number | null = null;
  do {
    busy = await machineBusyPct(2000);
    if (busy === null || busy < 20) break;
    process.stderr.write(`bench: machine busy (${fmt(busy)}% of a core), waiting for it to go idle\n`);
  } while (Date.now() < until);
  return busy;
}

async function main(): Promise<number> {
  const perRunS = opts.durationS + 5;
  const budgetS =
    opts.rounds * opts.connections.length * opts.targets.length * perRunS * (1 + Math.max(0, opts.noiseRetries)) +
    opts.rounds * opts.connections.length * opts.targets.length * Math.max(0, opts.noiseRetries) * 30 +
    opts.targets.length * (opts.warmupS + 90) +
    Math.max(0, opts.quietWaitS) +
    60;
  const watchdog = setTimeout(() => {
    process.stderr.write(`bench: time budget of ${budgetS} s exceeded, killing children\n`);
    killAll('SIGKILL');
    process.exit(2);
  }, budgetS * 1000);
  watchdog.unref();

  process.stderr.write(
    `bench: targets ${opts.targets.join(', ')}; connections ${opts.connections.join(', ')}; ${opts.rounds} rounds x ${opts.durationS} s (warm-up ${opts.warmupS} s); budget ${budgetS} s\n`,
  );

  const busyBefore = opts.quietWaitS > 0 ? await waitQuiet(opts.quietWaitS) : null;

  const running: Running[] = [];
  const startFailures: Record<string, string> = {};
  const samples: Record<string, unknown> = {};
  const runs: RunResult[] = [];
  const durability: Partial<Record<TargetName, Durability>> = {};
  let failed = false;
  let runError: string | undefined;

  try {
    for (const name of opts.targets) {
      try {
        const t = await startTarget(name);
        running.push(t);
        try {
          samples[name] = (await preflight(t)).sample;
        } catch (e) {
          running.pop();
          await sleep(100);
          const state = `${name} pid ${t.child.pid}: exit code ${t.child.exitCode}, signal ${t.child.signalCode}`;
          await stopChild(t.child, 'SIGKILL', 0);
          throw new Error(`${(e as Error).message} (${state})\n--- last output ---\n${t.output.join('\n')}`);
        }
        process.stderr.write(`bench: ${name} ready at ${t.url}\n`);
      } catch (e) {
        failed = true;
        startFailures[name] = (e as Error).message;
        process.stderr.write(`bench: ${name} could not be benchmarked: ${(e as Error).message}\n`);
      }
    }
    const maxConn = Math.max(...opts.connections);
    for (const t of running) {
      const w = await runLoad(t, maxConn, opts.warmupS, 'warmup', 0);
      runs.push(w);
      process.stderr.write(`bench: warm-up ${t.name}: ${fmt(w.tokens_per_s)} tokens/s, non-2xx ${w.non_2xx}\n`);
    }
    for (let round = 1; round <= opts.rounds; round++) {
      // Rotate the order every round (A B C, B C A, C A B …) so no target always runs right after the same one.
      const shift = (round - 1) % Math.max(1, running.length);
      const order = [...running.slice(shift), ...running.slice(0, shift)];
      for (const connections of opts.connections) {
        for (const t of order) {
          if (t.child.exitCode !== null || t.child.signalCode !== null) {
            throw new Error(`${t.name} died during the run\n${t.output.join('\n')}`);
          }
          await sleep(500); // let the previous target's sockets close
          let r = await runLoad(t, connections, opts.durationS, 'measure', round);
          for (let retry = 0; (r.other_cpu_pct ?? 0) > opts.noiseLimitPct && retry < opts.noiseRetries; retry++) {
            r.phase = 'discarded';
            runs.push(r);
            process.stderr.write(
              `bench: round ${round} c=${connections} ${t.name}: discarded (${fmt(r.tokens_per_s)} tokens/s; other work used ${fmt(r.other_cpu_pct ?? 0)}% of a core), redoing\n`,
            );
            await waitQuiet(30);
            r = await runLoad(t, connections, opts.durationS, 'measure', round);
          }
          runs.push(r);
          process.stderr.write(
            `bench: round ${round} c=${connections} ${t.name}: ${fmt(r.tokens_per_s)} tokens/s p50 ${fmt(r.latency_ms.p50, 2)} ms p99 ${fmt(r.latency_ms.p99, 2)} ms non-2xx ${r.non_2xx} errors ${r.errors} invalid ${r.invalid_tokens} CPU server ${r.server_cpu_pct === null ? '-' : fmt(r.server_cpu_pct)}% (${r.server_cpu_us_per_token === null ? '-' : fmt(r.server_cpu_us_per_token)} µs/token) load-gen ${fmt(r.loadgen_cpu_pct)}% other ${r.other_cpu_pct === null ? '-' : fmt(r.other_cpu_pct)}%\n`,
          );
        }
      }
    }

    // Durability: kill each Portcullis hard (no drain, no shutdown hook), then every token it handed out must have
    // its token.issued event in the database file.
    await sleep(200);
    for (const p of running) {
      if (!isPortcullis(p.name) || !p.dbPath) continue;
      await stopChild(p.child, 'SIGKILL', 0);
      const inFlight = runs.filter((r) => r.target === p.name).reduce((a, r) => a + r.in_flight_at_stop, 0);
      durability[p.name] = checkDurability(p.name, p.dbPath, inFlight, 'SIGKILL right after the last run');
    }
  } catch (e) {
    failed = true;
    runError = (e as Error).message.split('\n')[0];
    process.stderr.write(`bench: error: ${(e as Error).stack ?? e}\n`);
  } finally {
    await Promise.all(running.map((t) => stopChild(t.child, 'SIGTERM', 5000)));
    killAll('SIGKILL');
    if (opts.keepData) process.stderr.write(`bench: data kept in ${dataDirs.join(', ')}\n`);
    else for (const d of dataDirs) rmSync(d, { recursive: true, force: true });
  }

  const summary = summarize(runs);
  const ratio = ratios(summary, runs, 'portcullis', 'oidc-provider', 2);
  // Issuance with the audit sealer on over off: the goal is at most 10 % slower.
  const sealRatio = ratios(summary, runs, 'portcullis', 'portcullis-noseal', 0.9);
  // The same comparison by server CPU per token (off / on): what throughput would be if CPU were the only limit.
  const sealCpu = opts.connections.flatMap((connections) => {
    const on = summary.find((s) => s.target === 'portcullis' && s.connections === connections);
    const off = summary.find((s) => s.target === 'portcullis-noseal' && s.connections === connections);
    if (!on?.server_cpu_us_per_token_median || !off?.server_cpu_us_per_token_median) return [];
    return [
      {
        connections,
        cpu_us_per_token_on: on.server_cpu_us_per_token_median,
        cpu_us_per_token_off: off.server_cpu_us_per_token_median,
        off_over_on: off.server_cpu_us_per_token_median / on.server_cpu_us_per_token_median,
      },
    ];
  });
  const measureRuns = runs.filter((r) => r.phase === 'measure');
  const problems: string[] = [];
  for (const s of summary) {
    if (s.non_2xx_total > 0) problems.push(`${s.target} c=${s.connections}: ${s.non_2xx_total} non-2xx responses`);
    if (s.errors_total > 0) problems.push(`${s.target} c=${s.connections}: ${s.errors_total} connection errors`);
    if (s.invalid_tokens_total > 0)
      problems.push(`${s.target} c=${s.connections}: ${s.invalid_tokens_total} bad tokens`);
  }
  for (const r of runs) {
    if (r.duplicate_jti > 0) problems.push(`${r.target} ${r.phase} round ${r.round}: ${r.duplicate_jti} duplicate jti`);
    if (r.signature_sample && r.signature_sample.failures.length > 0) {
      problems.push(`${r.target}: signature failures: ${r.signature_sample.failures.slice(0, 2).join('; ')}`);
    }
  }
  const notes: string[] = [];
  const discarded = runs.filter((r) => r.phase === 'discarded').length;
  if (discarded) notes.push(`${discarded} noisy runs were discarded and redone (runs[] with phase "discarded")`);
  const noisy = measureRuns.filter((r) => (r.other_cpu_pct ?? 0) > 15);
  if (noisy.length) {
    notes.push(
      `${noisy.length} measured runs shared the machine with other work (>15% of a core): numbers are noisy, see runs[].other_cpu_pct`,
    );
  }
  for (const [name, d] of Object.entries(durability)) {
    if (d.missing > 0) problems.push(`${name}: ${d.missing} tokens without event`);
    // The sealer setting must have taken effect: sealed events and checkpoints exactly when sealing is on.
    if (name === 'portcullis-noseal' && (d.audit.sealed > 0 || d.audit.checkpoints > 0))
      problems.push(`${name}: ${d.audit.sealed} events sealed although audit.seal is false`);
    if (name === 'portcullis' && (d.audit.sealed === 0 || d.audit.checkpoints === 0))
      problems.push(`${name}: no event was sealed although the sealer is on`);
  }
  if (runError) problems.push(`run aborted: ${runError}`);
  for (const [name, msg] of Object.entries(startFailures)) problems.push(`${name}: ${msg.split('\n')[0]}`);
  if (problems.length) failed = true;

  const report = {
    generated_at: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? null,
      node: process.version,
      note: 'load generator (autocannon, this process) and the server under test share the same cores',
      busy_before_start_pct_of_one_core: busyBefore,
    },
    versions: {
      portcullis_commit: gitDescribe(),
      'oidc-provider': pkgVersion('oidc-provider'),
      autocannon: pkgVersion('autocannon'),
    },
    options: { ...opts, out: undefined, request_body: BODY, client_auth: 'client_secret_basic' },
    token_samples: samples,
    start_failures: startFailures,
    summary,
    ratio_portcullis_over_oidc_provider: ratio,
    ratio_sealing_on_over_off: sealRatio,
    sealing_cpu_per_token: sealCpu,
    durability,
    warnings_logged: Object.fromEntries(running.map((t) => [t.name, t.warnings])),
    problems,
    notes,
    runs,
  };
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, `${JSON.stringify(report, null, 2)}\n`);
  // Keep `npm run lint` (biome check … bench) green: lay the file out the way the project's formatter does.
  try {
    execFileSync(join(repoDir, 'node_modules', '.bin', 'biome'), ['format', '--write', opts.out], {
      cwd: repoDir,
      stdio: 'ignore',
    });
  } catch {
    // formatting is cosmetic; the results are written either way
  }

  const md: string[] = ['', markdownTable(summary), ''];
  for (const r of ratio) {
    md.push(
      `Portcullis / oidc-provider at ${r.connections} connections: ${fmt(r.ratio_of_medians, 2)}x (per round: ${r.per_round.map((x) => fmt(x, 2)).join(', ')}; median of those ${fmt(r.median_of_per_round, 2)}x) — goal 2x ${r.goal_met ? 'met' : 'NOT met'}`,
    );
  }
  for (const r of sealRatio) {
    md.push(
      `sealing on / off (portcullis / portcullis-noseal) at ${r.connections} connections: ${fmt(r.ratio_of_medians, 3)} (per round: ${r.per_round.map((x) => fmt(x, 3)).join(', ')}; median of those ${fmt(r.median_of_per_round, 3)}) — goal >= 0.90 ${r.goal_met ? 'met' : 'NOT met'}`,
    );
  }
  for (const c of sealCpu) {
    md.push(
      `server CPU per token at ${c.connections} connections: sealing on ${fmt(c.cpu_us_per_token_on)} µs, off ${fmt(c.cpu_us_per_token_off)} µs (off / on ${fmt(c.off_over_on, 3)})`,
    );
  }
  for (const [name, d] of Object.entries(durability)) {
    md.push(
      `${name}: events durable: ${d.found_in_events}/${d.tokens_received} (token.issued rows: ${d.token_issued_rows}; rows for responses dropped at run stop: ${d.rows_without_received_token}, in flight at stop: ${d.in_flight_at_stop_total}; server stopped by ${d.server_stop}); audit log at the kill: ${d.audit.sealed} sealed, ${d.audit.unsealed} unsealed, ${d.audit.checkpoints} checkpoints, tree size ${d.audit.tree_size}`,
    );
  }
  md.push(`${measureRuns.length} measured runs; results in ${opts.out}`);
  if (notes.length) md.push('', 'NOTES:', ...notes.map((n) => `- ${n}`));
  if (problems.length) md.push('', 'PROBLEMS:', ...problems.map((p) => `- ${p}`));
  process.stdout.write(`${md.join('\n')}\n`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
    killAll('SIGKILL');
    process.exit(1);
  },
);
