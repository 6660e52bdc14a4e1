/**
 * Gateway benchmark: the same GET through three paths to one bare node:http upstream, in one run, alternating:
 *   direct      the upstream itself (the floor for latency, the ceiling for throughput)
 *   portcullis  the Portcullis gateway in front of it, every request carrying a valid ES256 access token that is
 *               verified (cached signature; expiry, revocation, audience and scope every request) and forwarded
 *   nginx       Debian's nginx as a plain reverse proxy (keep-alive upstream pool, no auth)
 * at 10 and 50 connections, reporting requests/s and p50/p99 (medians over rounds) and the goal checks.
 *
 *   node bench/gateway.ts [--rounds 3] [--duration 10] [--warmup 3] [--connections 10,50]
 *                         [--targets direct,portcullis,nginx] [--nginx-workers auto]
 *                         [--out bench/results/gateway-latest.json] [--quiet-wait 60] [--noise-limit 25]
 *
 * Needs nginx (`apt-get install -y nginx`); it runs with its own config in a temp dir, `daemon off`, on a loopback
 * port. Loopback only; every child is killed at the end, also on error or Ctrl-C. Not part of `npm test`.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon, { type Client, type Result } from 'autocannon';

const benchDir = dirname(fileURLToPath(import.meta.url));
const repoDir = resolve(benchDir, '..');
const HOST = '127.0.0.1';
const RESOURCE = 'https://api.example.com';
const PATH = '/api/orders/7';

type TargetName = 'direct' | 'portcullis' | 'nginx';
const ALL_TARGETS: TargetName[] = ['direct', 'portcullis', 'nginx'];

const { values: flags } = parseArgs({
  options: {
    rounds: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string' },
    targets: { type: 'string' },
    'nginx-workers': { type: 'string' },
    out: { type: 'string' },
    'quiet-wait': { type: 'string' },
    'noise-limit': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (flags.help) {
  process.stdout.write(`${readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]}*/\n`);
  process.exit(0);
}
const int = (name: string, raw: string | undefined, def: number): number => {
  if (raw === undefined) return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name}: expected a positive integer`);
  return n;
};
const ROUNDS = int('rounds', flags.rounds, 3);
const DURATION = int('duration', flags.duration, 10);
const WARMUP = int('warmup', flags.warmup, 3);
const QUIET_WAIT = int('quiet-wait', flags['quiet-wait'], 60);
const NOISE_LIMIT = int('noise-limit', flags['noise-limit'], 25);
const CONNECTIONS = (flags.connections ?? '10,50').split(',').map((c) => int('connections', c, 10));
const TARGETS = (flags.targets ?? ALL_TARGETS.join(',')).split(',') as TargetName[];
for (const t of TARGETS) if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target ${t}`);
const NGINX_WORKERS = flags['nginx-workers'] ?? 'auto';
const OUT = resolve(repoDir, flags.out ?? 'bench/results/gateway-latest.json');

// ---------------------------------------------------------------- children

const children = new Set<ChildProcess>();
const tempDirs: string[] = [];
/** SIGKILL every child and its descendants (nginx workers outlive a killed master otherwise). */
function killAll(): void {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) continue;
    for (const pid of tree(c.pid).reverse())
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
  }
}
/** Asks every child to stop (nginx: SIGQUIT, a graceful shutdown of master and workers), then kills leftovers. */
async function stopAll(): Promise<void> {
  await Promise.all(
    [...children].map(async (c) => {
      if (c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise((r) => c.once('exit', r));
      c.kill(c.spawnargs[0]?.endsWith('nginx') ? 'SIGQUIT' : 'SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }),
  );
  killAll();
}
process.on('exit', () => {
  killAll();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.on(sig, () => {
    killAll();
    process.exit(130);
  });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, HOST, () => {
      const a = s.address();
      if (!a || typeof a === 'string') return rej(new Error('no port'));
      s.close(() => res(a.port));
    });
  });
}

interface Child {
  child: ChildProcess;
  output: string[];
  /** Resolves with the JSON "listening" line. */
  listening: Promise<Record<string, unknown>>;
}

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Child {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const output: string[] = [];
  let ok: (v: Record<string, unknown>) => void = () => {};
  let fail: (e: Error) => void = () => {};
  const listening = new Promise<Record<string, unknown>>((a, b) => {
    ok = a;
    fail = b;
  });
  listening.catch(() => {});
  for (const s of [child.stdout, child.stderr]) {
    let buf = '';
    s?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        output.push(line);
        if (output.length > 40) output.shift();
        if (line.startsWith('{'))
          try {
            const rec = JSON.parse(line) as Record<string, unknown>;
            if (rec.msg === 'listening') ok(rec);
          } catch {
            /* not JSON */
          }
      }
    });
  }
  child.once('exit', (code, signal) => {
    children.delete(child);
    fail(new Error(`${cmd} exited (code ${code}, signal ${signal})\n${output.join('\n')}`));
  });
  return { child, output, listening };
}

async function waitHttp(url: string, init: RequestInit, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    try {
      const r = await fetch(url, { ...init, signal: AbortSignal.timeout(1000) });
      await r.arrayBuffer();
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await sleep(100);
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms`);
}

// ---------------------------------------------------------------- CPU accounting

const CLK_TCK = 100;
function cpuTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}
/** A process and its descendants (nginx: master and workers). */
function tree(pid: number): number[] {
  const out = [pid];
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const kids = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      for (const k of kids ? kids.split(' ') : []) out.push(...tree(Number(k)));
    }
  } catch {
    /* gone */
  }
  return out;
}
function systemTicks(): number {
  const v = (readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  return v.slice(0, 8).reduce((a, b) => a + b, 0) - (v[3] ?? 0) - (v[4] ?? 0);
}
async function waitQuiet(maxS: number): Promise<number> {
  const end = Date.now() + maxS * 1000;
  let busy = 100;
  while (Date.now() < end) {
    const a = systemTicks();
    await sleep(2000);
    busy = ((systemTicks() - a) / CLK_TCK / 2) * 100;
    if (busy < 10) return busy;
    process.stderr.write(`bench: machine busy (${busy.toFixed(0)}% of a core), waiting\n`);
  }
  return busy;
}

// ---------------------------------------------------------------- load

interface Run {
  target: TargetName;
  phase: 'warmup' | 'measure' | 'discarded';
  round: number;
  connections: number;
  rps: number;
  ok_2xx: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  target_cpu_pct: number;
  upstream_cpu_pct: number;
  loadgen_cpu_pct: number;
  other_cpu_pct: number;
}

function pct(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

interface Target {
  name: TargetName;
  url: string;
  pid: number;
}

async function load(
  t: Target,
  upstreamPid: number,
  token: string,
  connections: number,
  seconds: number,
  phase: Run['phase'],
  round: number,
): Promise<Run> {
  const latencies: number[] = [];
  const setupClient = (c: Client) => {
    c.on('response', (_s: number, _b: number, ms: number) => {
      latencies.push(ms);
    });
  };
  const targetPids = t.name === 'direct' ? [] : tree(t.pid);
  const sum = (pids: number[]) => pids.reduce((n, p) => n + cpuTicks(p), 0);
  const tc0 = sum(targetPids);
  const uc0 = cpuTicks(upstreamPid);
  const sys0 = systemTicks();
  const lg0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await new Promise<Result>((res, rej) => {
    autocannon(
      {
        url: t.url,
        connections,
        pipelining: 1,
        duration: seconds,
        timeout: 10,
        setupClient,
        // The same request bytes on every path: the proxies forward it, the upstream ignores the header.
        requests: [{ method: 'GET', path: PATH, headers: { authorization: `Bearer ${token}` } }],
      },
      (err, out) => (err ? rej(err) : res(out)),
    );
  });
  const wall = (performance.now() - t0) / 1000;
  const lg = process.cpuUsage(lg0);
  const perCore = (ticks: number) => (ticks / CLK_TCK / wall) * 100;
  const targetCpu = perCore(sum(targetPids) - tc0);
  const upstreamCpu = perCore(cpuTicks(upstreamPid) - uc0);
  const loadgenCpu = ((lg.user + lg.system) / 1e6 / wall) * 100;
  const machine = perCore(systemTicks() - sys0);
  const sorted = Float64Array.from(latencies).sort();
  const duration = r.duration > 0 ? r.duration : wall;
  return {
    target: t.name,
    phase,
    round,
    connections,
    rps: r['2xx'] / duration,
    ok_2xx: r['2xx'],
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    p50_ms: pct(sorted, 0.5),
    p90_ms: pct(sorted, 0.9),
    p99_ms: pct(sorted, 0.99),
    max_ms: sorted[sorted.length - 1] ?? Number.NaN,
    target_cpu_pct: targetCpu,
    upstream_cpu_pct: upstreamCpu,
    loadgen_cpu_pct: loadgenCpu,
    other_cpu_pct: Math.max(0, machine - targetCpu - upstreamCpu - loadgenCpu),
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? Number.NaN : s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

// ---------------------------------------------------------------- targets

async function startPortcullis(upstreamUrl: string): Promise<{ target: Target; token: string; asUrl: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-gw-bench-'));
  tempDirs.push(dir);
  const [asPort, gwPort] = [await freePort(), await freePort()];
  const secret = randomBytes(24).toString('base64url');
  const q = JSON.stringify;
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      `listen: { host: ${q(HOST)}, port: ${asPort} }`,
      `storage: { url: ${q(`sqlite:${join(dir, 'p.db')}`)} }`,
      `keys: { algorithm: ES256, kek_file: ${q(join(dir, 'kek'))} }`,
      'log: { level: info }', // the 'listening' line (with gateway_url) is at info; nothing is logged per request
      `resources: [{ identifier: ${q(RESOURCE)}, scopes: [orders:read] }]`,
      `clients: [{ client_id: svc, client_secret: ${q(secret)}, scope: orders:read }]`,
      'gateway:',
      `  listen: { host: ${q(HOST)}, port: ${gwPort} }`,
      '  routes:',
      `    - { name: api, path_prefix: /api, upstream: ${q(upstreamUrl)}, resource: ${q(RESOURCE)}, scopes: { GET: [orders:read] } }`,
      '',
    ].join('\n'),
  );
  const c = start(
    process.execPath,
    [join(repoDir, 'src', 'main.ts'), 'start', '--config', join(dir, 'config.yaml')],
    {},
    dir,
  );
  const line = await Promise.race([
    c.listening,
    sleep(60_000).then(() => {
      throw new Error(`portcullis did not start\n${c.output.join('\n')}`);
    }),
  ]);
  const asUrl = String(line.url);
  const gwUrl = String(line.gateway_url);
  const res = await fetch(`${asUrl}/token`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`svc:${secret}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: 'grant_type=client_credentials&scope=orders%3Aread',
  });
  const body = (await res.json()) as { access_token?: string };
  if (!body.access_token) throw new Error(`no token: ${JSON.stringify(body)}`);
  return { target: { name: 'portcullis', url: gwUrl, pid: c.child.pid ?? 0 }, token: body.access_token, asUrl };
}

function nginxBinary(): string {
  for (const p of ['/usr/sbin/nginx', '/usr/bin/nginx']) if (existsSync(p)) return p;
  throw new Error('nginx not found: apt-get install -y nginx (or leave it out with --targets direct,portcullis)');
}

async function startNginx(upstreamPort: number): Promise<{ target: Target; version: string }> {
  const bin = nginxBinary();
  const dir = mkdtempSync(join(tmpdir(), 'nginx-bench-'));
  tempDirs.push(dir);
  mkdirSync(join(dir, 'logs'));
  const port = await freePort();
  // A plain reverse proxy, tuned the usual way: keep-alive to the upstream, no access log, no buffering to disk.
  writeFileSync(
    join(dir, 'nginx.conf'),
    `daemon off;
worker_processes ${NGINX_WORKERS};
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_requests 100000;
  upstream api { server ${HOST}:${upstreamPort}; keepalive 128; }
  server {
    listen ${HOST}:${port};
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`,
  );
  const version = execFileSync(bin, ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() || 'nginx';
  const c = start(bin, ['-p', dir, '-e', join(dir, 'logs', 'error.log'), '-c', join(dir, 'nginx.conf')], {}, dir);
  const url = `http://${HOST}:${port}`;
  await waitHttp(url + PATH, {}, 15_000);
  return { target: { name: 'nginx', url, pid: c.child.pid ?? 0 }, version };
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  const quiet = await waitQuiet(QUIET_WAIT);
  const up = start(process.execPath, [join(benchDir, 'peers', 'upstream.ts')], { HOST, PORT: '0' }, repoDir);
  const upUrl = String((await up.listening).url);
  const upstreamPid = up.child.pid ?? 0;
  const targets = new Map<TargetName, Target>();
  let token = 'unused';
  let nginxVersion: string | null = null;
  if (TARGETS.includes('direct')) targets.set('direct', { name: 'direct', url: upUrl, pid: upstreamPid });
  if (TARGETS.includes('portcullis')) {
    const p = await startPortcullis(upUrl);
    targets.set('portcullis', p.target);
    token = p.token;
    // The gateway really checks: no token is refused, the token passes.
    const denied = await fetch(p.target.url + PATH);
    await denied.arrayBuffer();
    const allowed = await fetch(p.target.url + PATH, { headers: { authorization: `Bearer ${token}` } });
    await allowed.arrayBuffer();
    if (denied.status !== 401 || allowed.status !== 200)
      throw new Error(`gateway preflight: without token ${denied.status}, with token ${allowed.status}`);
  }
  if (TARGETS.includes('nginx')) {
    const n = await startNginx(Number(new URL(upUrl).port));
    targets.set('nginx', n.target);
    nginxVersion = n.version;
  }

  const runs: Run[] = [];
  const order = TARGETS.filter((t) => targets.has(t));
  const maxConn = Math.max(...CONNECTIONS);
  for (const name of order) {
    process.stderr.write(`warm-up ${name} (${WARMUP}s at ${maxConn} connections)\n`);
    runs.push(await load(targets.get(name) as Target, upstreamPid, token, maxConn, WARMUP, 'warmup', 0));
  }
  for (const conns of CONNECTIONS)
    for (let round = 1; round <= ROUNDS; round++) {
      // Rotate the order every round: A B C, B C A, C A B.
      const rotated = order.map((_, i) => order[(i + round - 1) % order.length] as TargetName);
      for (const name of rotated) {
        let run: Run | undefined;
        for (let attempt = 0; attempt < 3; attempt++) {
          await sleep(500);
          run = await load(targets.get(name) as Target, upstreamPid, token, conns, DURATION, 'measure', round);
          if (run.other_cpu_pct <= NOISE_LIMIT) break;
          run.phase = 'discarded';
          runs.push(run);
          process.stderr.write(`  ${name}: other processes used ${run.other_cpu_pct.toFixed(0)}% of a core, redoing\n`);
        }
        if (run) {
          run.phase = 'measure';
          runs.push(run);
          process.stderr.write(
            `  c=${conns} r${round} ${name.padEnd(10)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.p50_ms.toFixed(3)} ms  p99 ${run.p99_ms.toFixed(3)} ms  non-2xx ${run.non_2xx}\n`,
          );
        }
      }
    }

  const measured = runs.filter((r) => r.phase === 'measure');
  const summary = CONNECTIONS.flatMap((c) =>
    order.map((t) => {
      const rs = measured.filter((r) => r.connections === c && r.target === t);
      return {
        target: t,
        connections: c,
        rounds: rs.length,
        rps: median(rs.map((r) => r.rps)),
        rps_min: Math.min(...rs.map((r) => r.rps)),
        rps_max: Math.max(...rs.map((r) => r.rps)),
        p50_ms: median(rs.map((r) => r.p50_ms)),
        p99_ms: median(rs.map((r) => r.p99_ms)),
        target_cpu_pct: median(rs.map((r) => r.target_cpu_pct)),
        // CPU the proxy (or, for direct, the upstream) spends per request: steadier than req/s on a shared machine.
        cpu_us_per_request: median(
          rs.map((r) => ((t === 'direct' ? r.upstream_cpu_pct : r.target_cpu_pct) / 100 / r.rps) * 1e6),
        ),
        non_2xx: rs.reduce((n, r) => n + r.non_2xx + r.errors + r.timeouts, 0),
      };
    }),
  );
  const get = (t: TargetName, c: number) => summary.find((s) => s.target === t && s.connections === c);
  const checks: Array<{ check: string; value: string; pass: boolean }> = [];
  for (const c of CONNECTIONS) {
    const p = get('portcullis', c);
    const n = get('nginx', c);
    if (p && n)
      checks.push({
        check: `throughput at ${c} connections >= 60% of nginx`,
        value: `${((p.rps / n.rps) * 100).toFixed(0)}%`,
        pass: p.rps >= 0.6 * n.rps,
      });
  }
  const p10 = get('portcullis', 10);
  const d10 = get('direct', 10);
  if (p10 && d10)
    checks.push({
      check: 'p99 at 10 connections < direct p99 + 1 ms',
      value: `+${(p10.p99_ms - d10.p99_ms).toFixed(3)} ms`,
      pass: p10.p99_ms < d10.p99_ms + 1,
    });
  const errorsSeen = summary.some((s) => s.non_2xx > 0);
  checks.push({
    check: 'every response 2xx, no errors or timeouts',
    value: errorsSeen ? 'no' : 'yes',
    pass: !errorsSeen,
  });

  const table = [
    '| target | connections | req/s (median, min–max) | p50 ms | p99 ms | proxy CPU % | proxy CPU µs/request |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...summary.map(
      (s) =>
        `| ${s.target} | ${s.connections} | ${s.rps.toFixed(0)} (${s.rps_min.toFixed(0)}–${s.rps_max.toFixed(0)}) | ${s.p50_ms.toFixed(3)} | ${s.p99_ms.toFixed(3)} | ${s.target === 'direct' ? '–' : s.target_cpu_pct.toFixed(0)} | ${s.cpu_us_per_request.toFixed(1)} |`,
    ),
    '',
    '| goal | value | pass |',
    '| --- | ---: | :---: |',
    ...checks.map((c) => `| ${c.check} | ${c.value} | ${c.pass ? 'yes' : 'NO'} |`),
  ].join('\n');
  process.stdout.write(`${table}\n`);
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(
    OUT,
    `${JSON.stringify(
      {
        at: new Date().toISOString(),
        machine: { cpus: cpus().length, model: cpus()[0]?.model, idle_before_pct_busy: quiet },
        versions: { node: process.version, nginx: nginxVersion, autocannon: 'see package-lock' },
        options: {
          rounds: ROUNDS,
          duration_s: DURATION,
          warmup_s: WARMUP,
          connections: CONNECTIONS,
          nginx_workers: NGINX_WORKERS,
        },
        summary,
        checks,
        runs,
      },
      null,
      2,
    )}\n`,
  );
  process.stderr.write(`results: ${OUT}\n`);
  await stopAll();
  return checks.every((c) => c.pass) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.stack : String(e)}\n`);
    stopAll().finally(() => process.exit(2));
  },
);
