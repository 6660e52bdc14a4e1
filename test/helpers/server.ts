/**
 * Black-box harness: every test talks to a real Portcullis process over real HTTP.
 * Each server gets its own free loopback port and its own temp dir (config, SQLite file, KEK file), so test files
 * can run in parallel. The server runs with PORTCULLIS_TEST_CLOCK=1 so lifetimes are tested with advanceClock(),
 * never with sleeps.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MAIN_TS = join(REPO_ROOT, 'src', 'main.ts');

/** Node 24 inside vitest (node_modules/.bin/node); the system `node` may be Node 20. */
export const NODE = process.execPath;

export type ConfigObject = Record<string, unknown>;

export interface StartOptions {
  /** Storage URL; default sqlite:<dir>/portcullis.db. */
  storageUrl?: string;
  /** Written as YAML (default) or JSON. */
  format?: 'yaml' | 'json';
  /** Extra environment for the server and cli() runs. */
  env?: Record<string, string>;
  /** Use PORTCULLIS_KEK (a fresh random key) instead of keys.kek_file in the temp dir. */
  kekEnv?: boolean;
  /** Milliseconds to wait for the "listening" line. */
  readyTimeoutMs?: number;
  /** Turn the fake clock off (default on). */
  testClock?: boolean;
  /**
   * Announce http://HOST:PORT as the issuer (e.g. "localhost": WebAuthn refuses IP addresses as relying party IDs).
   * The server still listens on 127.0.0.1.
   */
  issuerHost?: string;
  /** Extra files to write into the temp dir before start (name relative to the dir -> content). */
  files?: Record<string, string>;
  /** Extra arguments after `start --config FILE`, e.g. ['--role', 'gateway']. */
  args?: string[];
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ClockAdvance {
  now_ms: number;
  key_changes: unknown[];
}

export interface RunningServer {
  /** Base URL from the "listening" line, e.g. http://127.0.0.1:43123 (no trailing slash). */
  url: string;
  /** The issuer identifier the server should announce. */
  issuer: string;
  port: number;
  dir: string;
  configPath: string;
  /** The config as written (after adding listen/storage/keys.kek_file). */
  config: ConfigObject;
  /** Environment the server and cli() run with. */
  env: NodeJS.ProcessEnv;
  /** SIGTERM, wait for exit, throw unless exit code 0. */
  stop(): Promise<void>;
  /** stop() then start again on the same port, config, storage and KEK. */
  restart(): Promise<void>;
  /** POST /__test__/clock {"advance_seconds": N}. */
  advanceClock(seconds: number): Promise<ClockAdvance>;
  /** Runs `node src/main.ts ...args --config FILE` with the server's env and cwd. */
  cli(args: string[], opts?: { timeoutMs?: number }): Promise<CliResult>;
  /** Everything the server(s) wrote on stdout so far (all runs). */
  logs(): string;
  /** Everything written on stderr so far (all runs). */
  errors(): string;
  /** stdout lines parsed as JSON (non-JSON lines skipped). */
  logLines(): Record<string, unknown>[];
  /** Whether the process is running. */
  readonly running: boolean;
  /** Stops (best effort, SIGKILL if needed) and removes the temp dir. Use in afterAll. */
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

/** A free TCP port on 127.0.0.1 (asks the OS for an ephemeral port, then releases it). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

export function makeTempDir(prefix = 'portcullis-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A random 32-byte key encoded base64url, as PORTCULLIS_KEK accepts. */
export function randomKek(): string {
  return randomBytes(32).toString('base64url');
}

function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Never inherit a KEK or clock from the developer's shell: each test decides.
  delete env.PORTCULLIS_KEK;
  delete env.PORTCULLIS_TEST_CLOCK;
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/**
 * Runs a Portcullis command to completion (or until timeout, then SIGKILL). For commands that should exit
 * (cli subcommands, `start` with an invalid config).
 */
export function runPortcullis(
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = { cwd: REPO_ROOT },
): Promise<CliResult & { timedOut: boolean }> {
  return new Promise((res, rej) => {
    const child = spawn(NODE, [MAIN_TS, ...args], {
      cwd: opts.cwd,
      env: opts.env ?? childEnv({}),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 20_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      live.delete(child);
      rej(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      res({ code, signal, stdout, stderr, timedOut });
    });
    child.stdin.end(opts.input ?? '');
  });
}

export interface SpawnedProcess {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the parsed "listening" line; rejects (with all output) on exit or timeout. */
  ready: Promise<Record<string, unknown>>;
  /** Resolves on exit. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, wait; SIGKILL after killAfterMs. Returns the exit status. */
  terminate(killAfterMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns a long-running Portcullis process and watches stdout for the "listening" line. */
export function spawnPortcullis(
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; readyTimeoutMs?: number },
): SpawnedProcess {
  const child = spawn(NODE, [MAIN_TS, ...args], { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let out = '';
  let err = '';
  let pending = '';
  let onReady: (v: Record<string, unknown>) => void = () => {};
  let onFail: (e: Error) => void = () => {};
  let settled = false;
  const ready = new Promise<Record<string, unknown>>((res, rej) => {
    onReady = res;
    onFail = rej;
  });
  // Avoid unhandled rejection warnings when nobody awaits ready (e.g. invalid-config tests).
  ready.catch(() => {});
  const describe = () => `\n--- stdout ---\n${out.slice(-8000)}\n--- stderr ---\n${err.slice(-8000)}`;
  const timer = setTimeout(() => {
    if (!settled) {
      settled = true;
      onFail(
        new Error(
          `portcullis ${args.join(' ')} did not log "listening" within ${opts.readyTimeoutMs ?? 20_000} ms${describe()}`,
        ),
      );
    }
  }, opts.readyTimeoutMs ?? 20_000);
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    pending += d;
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      nl = pending.indexOf('\n');
      if (settled || !line.includes('listening')) continue;
      try {
        const obj = JSON.parse(line) as Record<string, unknown>;
        if (obj.msg === 'listening') {
          settled = true;
          clearTimeout(timer);
          onReady(obj);
        }
      } catch {
        /* not JSON */
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.on('close', (code, signal) => {
      live.delete(child);
      clearTimeout(timer);
      if (!settled) {
        settled = true;
        onFail(
          new Error(
            `portcullis ${args.join(' ')} exited (code ${code}, signal ${signal}) before "listening"${describe()}`,
          ),
        );
      }
      res({ code, signal });
    });
  });
  child.on('error', (e) => {
    if (!settled) {
      settled = true;
      onFail(e);
    }
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    ready,
    exited,
    async terminate(killAfterMs = 15_000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

function setDefault(obj: ConfigObject, key: string, value: unknown): void {
  if (obj[key] === undefined) obj[key] = value;
}

/** Writes `config` (plus listen/storage/kek) into a fresh temp dir and starts Portcullis on a free port. */
export async function startServer(configObject: ConfigObject, opts: StartOptions = {}): Promise<RunningServer> {
  const dir = makeTempDir();
  let port = await freePort();
  const config: ConfigObject = structuredClone(configObject);
  config.listen = { host: '127.0.0.1', ...((config.listen as object | undefined) ?? {}), port };
  setDefault(config, 'storage', { url: opts.storageUrl ?? `sqlite:${join(dir, 'portcullis.db')}` });
  const keys = { ...((config.keys as object | undefined) ?? {}) } as Record<string, unknown>;
  if (!opts.kekEnv) setDefault(keys, 'kek_file', join(dir, 'kek'));
  config.keys = keys;
  for (const [name, content] of Object.entries(opts.files ?? {}))
    writeFileSync(join(dir, name), content, { mode: 0o600 });
  const format = opts.format ?? 'yaml';
  const configPath = join(dir, format === 'json' ? 'portcullis.json' : 'portcullis.yaml');
  const writeConfig = () => {
    if (opts.issuerHost) config.issuer = `http://${opts.issuerHost}:${port}`;
    writeFileSync(configPath, format === 'json' ? JSON.stringify(config, null, 2) : toYaml(config));
  };
  writeConfig();
  const issuerFor = (p: number) =>
    ((config.issuer as string | undefined) ?? `http://127.0.0.1:${p}`).replace(/\/$/, '');

  const env = childEnv({
    ...(opts.testClock === false ? {} : { PORTCULLIS_TEST_CLOCK: '1' }),
    ...(opts.kekEnv ? { PORTCULLIS_KEK: randomKek() } : {}),
    ...(opts.env ?? {}),
  });

  let proc: SpawnedProcess | undefined;
  let url = `http://127.0.0.1:${port}`;
  let allOut = '';
  let allErr = '';
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;

  const launch = async () => {
    const p = spawnPortcullis(['start', '--config', configPath, ...(opts.args ?? [])], {
      cwd: dir,
      env,
      readyTimeoutMs,
    });
    proc = p;
    try {
      const line = await p.ready;
      if (typeof line.url === 'string') url = line.url.replace(/\/$/, '');
    } catch (e) {
      await p.terminate(2_000);
      throw e;
    }
  };
  const harvest = () => {
    if (proc) {
      allOut += proc.stdout();
      allErr += proc.stderr();
    }
  };

  // freePort() releases the port before the server binds it: another parallel file may grab it meanwhile.
  for (let attempt = 1; ; attempt++) {
    try {
      await launch();
      break;
    } catch (e) {
      if (attempt < 4 && /EADDRINUSE/.test(String((e as Error).message))) {
        port = await freePort();
        (config.listen as Record<string, unknown>).port = port;
        url = `http://127.0.0.1:${port}`;
        writeConfig();
        continue;
      }
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }
  const issuer = issuerFor(port);

  const server: RunningServer = {
    get url() {
      return url;
    },
    issuer,
    port,
    dir,
    configPath,
    config,
    env,
    get running() {
      return !!proc && proc.child.exitCode === null && proc.child.signalCode === null;
    },
    async stop() {
      if (!proc) return;
      const p = proc;
      const r = await p.terminate();
      harvest();
      proc = undefined;
      if (r.code !== 0)
        throw new Error(
          `portcullis did not exit 0 on SIGTERM (code ${r.code}, signal ${r.signal})\n--- stderr ---\n${p.stderr().slice(-4000)}\n--- stdout tail ---\n${p.stdout().slice(-4000)}`,
        );
    },
    async restart() {
      await server.stop();
      await launch();
    },
    async advanceClock(seconds: number) {
      const res = await fetch(`${url}/__test__/clock`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ advance_seconds: seconds }),
      });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`POST /__test__/clock -> ${res.status}: ${text}`);
      return JSON.parse(text) as ClockAdvance;
    },
    cli(args: string[], o: { timeoutMs?: number } = {}) {
      return runPortcullis([...args, '--config', configPath], { cwd: dir, env, timeoutMs: o.timeoutMs ?? 20_000 });
    },
    logs() {
      return allOut + (proc ? proc.stdout() : '');
    },
    errors() {
      return allErr + (proc ? proc.stderr() : '');
    },
    logLines() {
      const out: Record<string, unknown>[] = [];
      for (const line of server.logs().split('\n')) {
        try {
          const v = JSON.parse(line);
          if (v && typeof v === 'object') out.push(v as Record<string, unknown>);
        } catch {
          /* skip */
        }
      }
      return out;
    },
    async close() {
      if (proc) {
        await proc.terminate(5_000);
        harvest();
        proc = undefined;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

// ---------------------------------------------------------------------------------------------------------------
// PostgreSQL: one fresh database per test file.

export const POSTGRES_URL = process.env.PORTCULLIS_TEST_POSTGRES_URL;

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** CREATE DATABASE portcullis_test_<random> on PORTCULLIS_TEST_POSTGRES_URL; drop() removes it. */
export async function createPostgresDatabase(baseUrl = POSTGRES_URL): Promise<TestDatabase> {
  if (!baseUrl) throw new Error('PORTCULLIS_TEST_POSTGRES_URL is not set');
  const pg = (await import('pg')).default;
  const name = `portcullis_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: baseUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const u = new URL(baseUrl);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    name,
    async drop() {
      const c = new pg.Client({ connectionString: baseUrl });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Says loudly why PostgreSQL tests are skipped. Returns true when they can run. */
export function postgresAvailable(suite: string): boolean {
  if (POSTGRES_URL) return true;
  console.warn(
    `\n*** SKIPPING ${suite} on PostgreSQL: PORTCULLIS_TEST_POSTGRES_URL is not set ` +
      '(e.g. PORTCULLIS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test npm test) ***\n',
  );
  return false;
}
