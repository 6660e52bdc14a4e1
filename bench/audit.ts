/**
 * Audit log benchmark (issue 6): how fast the sealer seals, whether it keeps up with a steady stream of events,
 * and how fast `portcullis audit verify` checks a sealed log.
 *
 *   node bench/audit.ts [--events 200000] [--rounds 3] [--rate 25000] [--seconds 10] [--interval 1]
 *                       [--postgres URL] [--skip-cli] [--out bench/results/audit-latest.json]
 *
 * Per backend (SQLite always; PostgreSQL with --postgres URL or PORTCULLIS_TEST_POSTGRES_URL, in a fresh database
 * created for each store and dropped after) and per round:
 *   1. seal:       a fresh store filled with --events token.issued events (the shape src/oauth/tokens/access-token.ts
 *                  writes) through storage.appendEventsBatch, then Sealer.sealOnce() (src/audit/sealer.ts) timed
 *                  in-process: events/s.
 *   2. seal (CLI): the same on a second fresh store with `portcullis audit seal --config FILE` (a child process;
 *                  reported with and without the process's start-up, measured by `portcullis audit key`).
 *   3. verify:     `portcullis audit verify --config FILE` over the store sealed in 1 (must exit 0): entries/s, with
 *                  and without start-up. Skipped, with a note, when this build has no `audit verify`. Also a
 *                  reference recomputation in this process (read every sealed row in leaf order, rehash, compare
 *                  the root with the latest checkpoint, check its signature): the floor for reading + hashing.
 *   4. keeps up:   a fresh store, the sealer running as in the server (Sealer.start, --interval seconds) while a
 *                  writer appends events at --rate events/s for --seconds through storage.appendEventsBatch (on
 *                  SQLite the server's own event-writer thread): the unsealed backlog sampled every 100 ms, how
 *                  long the sealer needs to catch up when the writer stops, and how much main-thread time sealing
 *                  took.
 * Median and min–max over the rounds; /proc/loadavg before and after. Everything in the JSON file. Not part of
 * `npm test`; local files and loopback PostgreSQL only; a watchdog ends the run if it exceeds its time budget.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { eventLeafHash } from '../src/audit/entry.ts';
import { Frontier } from '../src/audit/merkle.ts';
import { openCheckpoint } from '../src/audit/note.ts';
import { auditOrigin, ensureAuditKey, keyRecordVerifier, Sealer, type SealResult } from '../src/audit/sealer.ts';
import type { Config } from '../src/config/schema.ts';
import type { SecurityEvent } from '../src/events/catalogue.ts';
import { loadKek } from '../src/keys/kek.ts';
import { systemClock } from '../src/lib/clock.ts';
import { loadConfig, openMigrated } from '../src/main.ts';
import type { CheckpointRecord, Storage } from '../src/storage/ports.ts';

const benchDir = dirname(fileURLToPath(import.meta.url));
const repoDir = resolve(benchDir, '..');
const cliPath = join(repoDir, 'bin', 'portcullis.js');

// ---------------------------------------------------------------- options

const { values: flags } = parseArgs({
  options: {
    events: { type: 'string' },
    rounds: { type: 'string' },
    rate: { type: 'string' },
    seconds: { type: 'string' },
    interval: { type: 'string' },
    postgres: { type: 'string' },
    'skip-cli': { type: 'boolean' },
    out: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  allowPositionals: false,
});

if (flags.help) {
  process.stdout.write(`${readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0] ?? ''}*/\n`);
  process.exit(0);
}

function positive(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}: expected a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

const opts = {
  events: Math.floor(positive('events', flags.events, 200_000)),
  rounds: Math.floor(positive('rounds', flags.rounds, 3)),
  rate: Math.floor(positive('rate', flags.rate, 25_000)),
  seconds: positive('seconds', flags.seconds, 10),
  interval: positive('interval', flags.interval, 1),
  postgres: flags.postgres ?? process.env.PORTCULLIS_TEST_POSTGRES_URL ?? undefined,
  cli: !flags['skip-cli'],
  out: resolve(flags.out ?? join(benchDir, 'results', 'audit-latest.json')),
};

const GOALS = { seal_events_per_s: 20_000, verify_entries_per_s: 200_000 };
const KEK = randomBytes(32).toString('base64url');
process.env.PORTCULLIS_KEK = KEK; // loadKek (this process) and every CLI child read it

// ---------------------------------------------------------------- helpers

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const log = (s: string) => process.stderr.write(`bench-audit: ${s}\n`);

function median(xs: number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

interface Stat {
  median: number;
  min: number;
  max: number;
  values: number[];
}
function stat(xs: number[]): Stat | null {
  if (xs.length === 0) return null;
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), values: xs };
}

const fmt = (n: number | null | undefined, digits = 0) =>
  n === null || n === undefined || !Number.isFinite(n)
    ? '–'
    : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').trim();

/** A realistic token.issued event (the shape prepareAccessToken builds for client_credentials). */
function tokenEvent(at: number): SecurityEvent {
  return {
    type: 'token.issued',
    at,
    request_id: randomBytes(16).toString('base64url'),
    client_id: 'svc',
    subject: 'svc',
    jti: randomBytes(16).toString('base64url'),
    grant_id: null,
    data: {
      token_type: 'access_token',
      grant_type: 'client_credentials',
      aud: 'https://api.example.com',
      scope: 'orders:read orders:write',
      exp: Math.floor(at / 1000) + 600,
      kid: 'Vb6l2x6Yl0x8kq1c0V3vPLuWlGmR0z1tW1b1k8mR1aE',
    },
  };
}

// ---------------------------------------------------------------- stores

type Backend = 'sqlite' | 'postgres';

interface Store {
  backend: Backend;
  dir: string;
  configPath: string;
  config: Config;
  storage: Storage;
  drop(): Promise<void>;
}

const cleanups = new Set<() => Promise<void>>();

async function createPgDatabase(baseUrl: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const pg = (await import('pg')).default;
  const name = `portcullis_bench_${randomBytes(6).toString('hex')}`;
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

/** A fresh, migrated store with a config file the CLI can use. */
async function freshStore(backend: Backend): Promise<Store> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-audit-'));
  let url = `sqlite:${join(dir, 'portcullis.db')}`;
  let dropDb: (() => Promise<void>) | undefined;
  if (backend === 'postgres') {
    const db = await createPgDatabase(opts.postgres as string);
    url = db.url;
    dropDb = db.drop;
  }
  const configPath = join(dir, 'config.yaml');
  const q = JSON.stringify;
  writeFileSync(
    configPath,
    [
      `issuer: ${q('http://127.0.0.1:9/')}`,
      `storage: { url: ${q(url)} }`,
      `keys: { algorithm: ES256, kek_file: ${q(join(dir, 'kek'))} }`,
      'log: { level: warn }',
      '',
    ].join('\n'),
  );
  const { config } = loadConfig(configPath);
  const { storage } = await openMigrated(config, systemClock);
  let closed = false;
  const store: Store = {
    backend,
    dir,
    configPath,
    config,
    storage,
    async drop() {
      cleanups.delete(store.drop);
      if (!closed) {
        closed = true;
        await storage.close().catch(() => {});
      }
      await dropDb?.().catch((e: unknown) => log(`could not drop database: ${(e as Error).message}`));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  cleanups.add(store.drop);
  return store;
}

/** Appends n events through the server's own batch path (SQLite: the event-writer thread). */
async function fill(storage: Storage, n: number): Promise<number> {
  const t0 = performance.now();
  const base = Date.now();
  const batch = 5000;
  const inFlight: Promise<void>[] = [];
  for (let i = 0; i < n; i += batch) {
    const list: SecurityEvent[] = [];
    for (let j = i; j < Math.min(n, i + batch); j++) list.push(tokenEvent(base + Math.floor(j / 20)));
    inFlight.push(storage.appendEventsBatch(list));
    if (inFlight.length >= 4) await inFlight.shift();
  }
  await Promise.all(inFlight);
  return (performance.now() - t0) / 1000;
}

async function sealerFor(store: Store): Promise<Sealer> {
  const kek = loadKek(store.config.keys.kek_file, { create: false });
  const origin = auditOrigin(store.config);
  const key = await ensureAuditKey(store.storage, kek, origin, systemClock, 'bench');
  return new Sealer(store.storage, systemClock, origin, key);
}

// ---------------------------------------------------------------- CLI

interface CliRun {
  code: number | null;
  seconds: number;
  stdout: string;
  stderr: string;
}

function runCli(args: string[], timeoutMs: number): Promise<CliRun> {
  return new Promise((res) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [cliPath, ...args], {
      cwd: repoDir,
      env: { ...process.env, PORTCULLIS_KEK: KEK },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < 100_000) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 100_000) stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', (code) => {
      clearTimeout(timer);
      res({ code, seconds: (performance.now() - t0) / 1000, stdout, stderr });
    });
  });
}

/** Whether this build has `portcullis audit verify` (another branch adds it). */
async function verifyAvailable(): Promise<boolean> {
  const r = await runCli(['audit', '--help'], 60_000);
  return /^ {2}verify\b/m.test(r.stdout + r.stderr);
}

// ---------------------------------------------------------------- measurements

interface SealRound {
  events_in_store: number;
  fill_s: number;
  sealed: number;
  seal_s: number;
  events_per_s: number;
  tree_size: number;
}

interface CliSealRound {
  sealed: number;
  wall_s: number;
  startup_s: number;
  events_per_s_wall: number;
  events_per_s_net: number;
  output: string;
}

interface VerifyRound {
  entries: number;
  wall_s: number;
  startup_s: number;
  entries_per_s_wall: number;
  entries_per_s_net: number;
  exit_code: number | null;
  output: string;
}

interface RecomputeRound {
  entries: number;
  seconds: number;
  entries_per_s: number;
  root_matches_latest_checkpoint: boolean;
  signature_ok: boolean;
}

/** Reads every sealed row in leaf order, rehashes, and checks the latest checkpoint's root and signature. */
async function recompute(store: Store): Promise<RecomputeRound> {
  const t0 = performance.now();
  const frontier = new Frontier();
  const page = 20_000;
  for (;;) {
    const rows = await store.storage.audit.sealed(frontier.size, page);
    for (const row of rows) {
      if (row.leaf_index !== frontier.size) throw new Error(`leaf ${frontier.size}: found ${row.leaf_index}`);
      frontier.append(eventLeafHash(row));
    }
    if (rows.length < page) break;
  }
  const latest = await store.storage.audit.latestCheckpoint();
  const key = (await store.storage.audit.keys()).find((k) => k.key_id === latest?.key_id);
  let signatureOk = false;
  let rootOk = false;
  if (latest && key) {
    const opened = openCheckpoint(latest.note, keyRecordVerifier(key));
    signatureOk = opened.verified;
    rootOk = opened.checkpoint.size === frontier.size && opened.checkpoint.root.equals(frontier.root()) && signatureOk;
  }
  const seconds = (performance.now() - t0) / 1000;
  return {
    entries: frontier.size,
    seconds,
    entries_per_s: frontier.size / seconds,
    root_matches_latest_checkpoint: rootOk,
    signature_ok: signatureOk,
  };
}

interface KeepUpRound {
  target_rate: number;
  written: number;
  write_s: number;
  achieved_rate: number;
  /**
   * Unsealed backlog (events handed to the store, committed or about to be, minus events sealed), sampled every
   * 100 ms: [seconds since start, events].
   */
  samples: Array<[number, number]>;
  backlog_max: number;
  backlog_max_s_of_writes: number;
  backlog_mean_first_half: number;
  backlog_mean_second_half: number;
  backlog_at_writer_stop: number;
  /** Seconds from the writer's last batch (handed to the store) until a checkpoint covered every event. */
  catch_up_s: number | null;
  seal_rounds: number;
  seal_round_ms: Stat | null;
  /** Share of wall time the sealer's rounds occupied (on SQLite that is main-thread time, as in the server). */
  sealer_busy_pct: number;
  sealed_per_s_while_writing: number;
  /** At the rate the writer reached: the backlog did not grow and was sealed soon after the last write. */
  keeps_up: boolean;
  /** keeps_up, and the writer reached the goal rate (20,000 events/s). */
  goal_met: boolean;
  /** The same writer on a fresh store with no sealer running (what the machine can write at all). */
  writer_alone_rate?: number;
}

/** The writer of keepUp without any sealer: events/s the store accepts on this machine right now. */
async function writerAlone(store: Store): Promise<number> {
  const t0 = performance.now();
  const until = t0 + opts.seconds * 1000;
  let issued = 0;
  let acked = 0;
  let inFlight = 0;
  let lastAck = t0;
  while (performance.now() < until) {
    const due = Math.floor(((performance.now() - t0) / 1000) * opts.rate) - issued;
    if (due > 0 && inFlight < opts.rate) {
      const n = Math.min(due, 5000);
      const now = Date.now();
      const list: SecurityEvent[] = new Array(n);
      for (let i = 0; i < n; i++) list[i] = tokenEvent(now);
      issued += n;
      inFlight += n;
      void store.storage.appendEventsBatch(list).then(() => {
        inFlight -= n;
        acked += n;
        lastAck = performance.now();
      });
    }
    await sleep(5);
  }
  while (inFlight > 0) await sleep(5);
  return acked / ((lastAck - t0) / 1000);
}

async function keepUp(store: Store): Promise<KeepUpRound> {
  const sealer = await sealerFor(store);
  await sealer.sealOnce(); // the migration and key events: start from an empty backlog
  const base = (await store.storage.audit.latestCheckpoint())?.tree_size ?? 0;
  let sealedTo = base;
  const checkpoints: Array<{ t: number; size: number }> = [];
  sealer.onCheckpoint((c: CheckpointRecord) => {
    sealedTo = c.tree_size;
    checkpoints.push({ t: performance.now(), size: c.tree_size });
  });
  // Time every round the loop runs (Sealer.start calls this.sealOnce).
  const rounds: number[] = [];
  let busyMs = 0;
  const original = sealer.sealOnce.bind(sealer);
  sealer.sealOnce = async (): Promise<SealResult> => {
    const t = performance.now();
    try {
      return await original();
    } finally {
      const ms = performance.now() - t;
      rounds.push(ms);
      busyMs += ms;
    }
  };

  const t0 = performance.now();
  sealer.start(opts.interval * 1000);
  let issued = 0;
  let acked = 0;
  let inFlight = 0;
  let failures = 0;
  let lastAck = t0;
  let lastIssue = t0;
  const samples: Array<[number, number]> = [];
  const writeUntil = t0 + opts.seconds * 1000;
  const sampler = setInterval(() => {
    samples.push([(performance.now() - t0) / 1000, base + issued - sealedTo]);
  }, 100);
  // Writer: every 5 ms, append what the target rate says is due, as one batch (the server's group commit batches
  // per event-loop turn the same way). At most one second of events in flight.
  while (performance.now() < writeUntil) {
    const due = Math.floor(((performance.now() - t0) / 1000) * opts.rate) - issued;
    if (due > 0 && inFlight < opts.rate) {
      const n = Math.min(due, 5000);
      const now = Date.now();
      const list: SecurityEvent[] = new Array(n);
      for (let i = 0; i < n; i++) list[i] = tokenEvent(now);
      issued += n;
      inFlight += n;
      lastIssue = performance.now();
      store.storage.appendEventsBatch(list).then(
        () => {
          inFlight -= n;
          acked += n;
          lastAck = performance.now();
        },
        () => {
          inFlight -= n;
          failures += n;
        },
      );
    }
    await sleep(5);
  }
  while (inFlight > 0) await sleep(5);
  const writeS = (lastAck - t0) / 1000;
  const backlogAtStop = base + issued - sealedTo;
  const sealedWhileWriting = sealedTo - base;
  // Catch-up: wait until a checkpoint covers everything (bounded).
  const deadline = performance.now() + 60_000;
  while (sealedTo < base + acked && performance.now() < deadline) await sleep(10);
  const caughtUp = sealedTo >= base + acked ? checkpoints.find((c) => c.size >= base + acked) : undefined;
  clearInterval(sampler);
  const wallS = (performance.now() - t0) / 1000;
  await sealer.stop();
  if (failures > 0) throw new Error(`${failures} events failed to write`);

  const during = samples.filter(([t]) => t <= writeS);
  const half = writeS / 2;
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  const first = mean(during.filter(([t]) => t >= opts.interval && t < half).map(([, b]) => b));
  const second = mean(during.filter(([t]) => t >= half).map(([, b]) => b));
  const backlogMax = Math.max(0, ...samples.map(([, b]) => b));
  const catchUpS = caughtUp ? (caughtUp.t - lastIssue) / 1000 : null;
  const achieved = acked / writeS;
  // Keeps up: everything written was sealed within two intervals (+1 s) of the last write, and the backlog did not
  // grow from the first half of the window to the second (beyond one interval's worth of events: sampling jitter).
  const keepsUp =
    catchUpS !== null && catchUpS <= 2 * opts.interval + 1 && !(second > first + achieved * opts.interval);
  return {
    target_rate: opts.rate,
    written: acked,
    write_s: writeS,
    achieved_rate: achieved,
    samples: samples.map(([t, b]) => [Math.round(t * 10) / 10, b]),
    backlog_max: backlogMax,
    backlog_max_s_of_writes: backlogMax / opts.rate,
    backlog_mean_first_half: first,
    backlog_mean_second_half: second,
    backlog_at_writer_stop: backlogAtStop,
    catch_up_s: catchUpS,
    seal_rounds: rounds.length,
    seal_round_ms: stat(rounds),
    sealer_busy_pct: (busyMs / 1000 / wallS) * 100,
    sealed_per_s_while_writing: sealedWhileWriting / writeS,
    keeps_up: keepsUp,
    goal_met: keepsUp && achieved >= GOALS.seal_events_per_s,
  };
}

// ---------------------------------------------------------------- main

interface BackendResult {
  backend: Backend;
  seal: SealRound[];
  seal_cli: CliSealRound[];
  verify: VerifyRound[];
  verify_skipped?: string;
  recompute: RecomputeRound[];
  keep_up: KeepUpRound[];
  summary: Record<string, Stat | null>;
}

async function benchBackend(backend: Backend, hasVerify: boolean): Promise<BackendResult> {
  const out: BackendResult = {
    backend,
    seal: [],
    seal_cli: [],
    verify: [],
    recompute: [],
    keep_up: [],
    summary: {},
  };
  if (!hasVerify) out.verify_skipped = 'skipped: audit verify not available in this build';
  for (let round = 1; round <= opts.rounds; round++) {
    // 1. in-process sealing
    const a = await freshStore(backend);
    try {
      const fillS = await fill(a.storage, opts.events);
      const sealer = await sealerFor(a);
      const inStore = await a.storage.events.count();
      const t0 = performance.now();
      const r = await sealer.sealOnce();
      const sealS = (performance.now() - t0) / 1000;
      const sr: SealRound = {
        events_in_store: inStore,
        fill_s: fillS,
        sealed: r.sealed,
        seal_s: sealS,
        events_per_s: r.sealed / sealS,
        tree_size: r.checkpoint?.tree_size ?? 0,
      };
      if (r.sealed !== inStore) throw new Error(`sealed ${r.sealed} of ${inStore} events`);
      out.seal.push(sr);
      log(
        `${backend} round ${round}: filled ${fmt(inStore)} events in ${fmt(fillS, 1)} s; sealed in ${fmt(sealS, 2)} s = ${fmt(sr.events_per_s)} events/s`,
      );

      // 3. verification over that store
      const rc = await recompute(a);
      out.recompute.push(rc);
      log(
        `${backend} round ${round}: in-process recompute ${fmt(rc.entries)} entries in ${fmt(rc.seconds, 2)} s = ${fmt(rc.entries_per_s)}/s (root ${rc.root_matches_latest_checkpoint ? 'matches' : 'DOES NOT MATCH'})`,
      );
      if (!rc.root_matches_latest_checkpoint) throw new Error('recomputed root does not match the latest checkpoint');
      if (hasVerify) {
        const startup = await runCli(['audit', 'key', '--config', a.configPath], 120_000);
        const v = await runCli(['audit', 'verify', '--config', a.configPath], 600_000);
        const net = Math.max(1e-3, v.seconds - startup.seconds);
        const vr: VerifyRound = {
          entries: sr.tree_size,
          wall_s: v.seconds,
          startup_s: startup.seconds,
          entries_per_s_wall: sr.tree_size / v.seconds,
          entries_per_s_net: sr.tree_size / net,
          exit_code: v.code,
          output: (v.stdout + v.stderr).trim().split('\n').slice(-5).join('\n'),
        };
        out.verify.push(vr);
        log(
          `${backend} round ${round}: audit verify exit ${v.code}, ${fmt(v.seconds, 2)} s (start-up ${fmt(startup.seconds, 2)} s) = ${fmt(vr.entries_per_s_wall)}/s wall, ${fmt(vr.entries_per_s_net)}/s net`,
        );
        if (v.code !== 0) throw new Error(`audit verify exited ${v.code} on a clean log:\n${vr.output}`);
      }
    } finally {
      await a.drop();
    }

    // 2. sealing through the CLI
    if (opts.cli) {
      const b = await freshStore(backend);
      try {
        await fill(b.storage, opts.events);
        await b.storage.close(); // the CLI is the only client
        const startup = await runCli(['audit', 'key', '--config', b.configPath], 120_000);
        const s = await runCli(['audit', 'seal', '--config', b.configPath], 600_000);
        if (s.code !== 0) throw new Error(`audit seal exited ${s.code}: ${s.stderr}`);
        const sealed = Number(/sealed (\d+) event/.exec(s.stdout)?.[1] ?? Number.NaN);
        const net = Math.max(1e-3, s.seconds - startup.seconds);
        const cr: CliSealRound = {
          sealed,
          wall_s: s.seconds,
          startup_s: startup.seconds,
          events_per_s_wall: sealed / s.seconds,
          events_per_s_net: sealed / net,
          output: s.stdout.trim(),
        };
        out.seal_cli.push(cr);
        log(
          `${backend} round ${round}: audit seal (CLI) ${fmt(sealed)} events in ${fmt(s.seconds, 2)} s (start-up ${fmt(startup.seconds, 2)} s) = ${fmt(cr.events_per_s_wall)}/s wall, ${fmt(cr.events_per_s_net)}/s net`,
        );
      } finally {
        await b.drop();
      }
    }

    // 4. keeping up with a steady writer
    const c = await freshStore(backend);
    const d = await freshStore(backend);
    try {
      const k = await keepUp(c);
      k.writer_alone_rate = await writerAlone(d);
      out.keep_up.push(k);
      log(
        `${backend} round ${round}: writer ${fmt(k.achieved_rate)}/s for ${fmt(k.write_s, 1)} s; backlog max ${fmt(k.backlog_max)} (${fmt(k.backlog_max_s_of_writes, 2)} s of writes), mean ${fmt(k.backlog_mean_first_half)} -> ${fmt(k.backlog_mean_second_half)}; caught up ${fmt(k.catch_up_s, 2)} s after the last write; ${k.seal_rounds} seal rounds, median ${fmt(k.seal_round_ms?.median)} ms, sealer busy ${fmt(k.sealer_busy_pct)}% -> ${k.keeps_up ? 'keeps up' : 'DOES NOT keep up'}; the same writer with no sealer: ${fmt(k.writer_alone_rate)}/s`,
      );
    } finally {
      await c.drop();
      await d.drop();
    }
  }
  out.summary = {
    seal_events_per_s: stat(out.seal.map((r) => r.events_per_s)),
    seal_cli_events_per_s_wall: stat(out.seal_cli.map((r) => r.events_per_s_wall)),
    seal_cli_events_per_s_net: stat(out.seal_cli.map((r) => r.events_per_s_net)),
    verify_entries_per_s_wall: stat(out.verify.map((r) => r.entries_per_s_wall)),
    verify_entries_per_s_net: stat(out.verify.map((r) => r.entries_per_s_net)),
    recompute_entries_per_s: stat(out.recompute.map((r) => r.entries_per_s)),
    keep_up_achieved_rate: stat(out.keep_up.map((r) => r.achieved_rate)),
    keep_up_writer_alone_rate: stat(out.keep_up.map((r) => r.writer_alone_rate ?? Number.NaN)),
    keep_up_backlog_max: stat(out.keep_up.map((r) => r.backlog_max)),
    keep_up_catch_up_s: stat(out.keep_up.map((r) => r.catch_up_s ?? Number.POSITIVE_INFINITY)),
    keep_up_sealer_busy_pct: stat(out.keep_up.map((r) => r.sealer_busy_pct)),
  };
  return out;
}

function gitHead(): string | null {
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

function markdown(results: BackendResult[]): string {
  const row = (label: string, s: Stat | null | undefined, goal?: number) =>
    s
      ? `| ${label} | ${fmt(s.median)} | ${fmt(s.min)}–${fmt(s.max)} | ${goal === undefined ? '' : s.median >= goal ? 'met' : '**not met**'} |`
      : `| ${label} | – | – | |`;
  const lines: string[] = [];
  for (const r of results) {
    lines.push(
      '',
      `${r.backend}, ${fmt(opts.events)} events, ${opts.rounds} rounds:`,
      '',
      '| measurement | median | min–max | goal |',
      '| --- | ---: | ---: | --- |',
      row('seal, in-process (events/s)', r.summary.seal_events_per_s, GOALS.seal_events_per_s),
      row('seal, `audit seal` CLI, wall (events/s)', r.summary.seal_cli_events_per_s_wall),
      row('seal, `audit seal` CLI, minus start-up (events/s)', r.summary.seal_cli_events_per_s_net),
      r.verify_skipped
        ? `| \`audit verify\` (entries/s) | ${r.verify_skipped} | | |`
        : row('`audit verify`, wall (entries/s)', r.summary.verify_entries_per_s_wall, GOALS.verify_entries_per_s),
      ...(r.verify_skipped
        ? []
        : [
            row(
              '`audit verify`, minus start-up (entries/s)',
              r.summary.verify_entries_per_s_net,
              GOALS.verify_entries_per_s,
            ),
          ]),
      row('reference recompute in-process (entries/s)', r.summary.recompute_entries_per_s),
      row(`keep-up: writer rate (events/s, target ${fmt(opts.rate)})`, r.summary.keep_up_achieved_rate),
      row('keep-up: same writer, no sealer (events/s)', r.summary.keep_up_writer_alone_rate),
      row('keep-up: max unsealed backlog (events)', r.summary.keep_up_backlog_max),
      row('keep-up: sealer busy (% of wall time)', r.summary.keep_up_sealer_busy_pct),
      `| keep-up: caught up after the last write (s) | ${fmt(r.summary.keep_up_catch_up_s?.median, 2)} | ${fmt(r.summary.keep_up_catch_up_s?.min, 2)}–${fmt(r.summary.keep_up_catch_up_s?.max, 2)} | ${r.keep_up.filter((k) => k.keeps_up).length} of ${r.keep_up.length} rounds kept up; 20,000/s ${r.keep_up.filter((k) => k.goal_met).length === r.keep_up.length ? 'met' : `**not met** in ${r.keep_up.filter((k) => !k.goal_met).length} of ${r.keep_up.length}`} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  const backends: Backend[] = opts.postgres ? ['sqlite', 'postgres'] : ['sqlite'];
  const budgetS = backends.length * opts.rounds * (opts.seconds + 120 + opts.events / 1000) + 120;
  const watchdog = setTimeout(() => {
    log(`time budget of ${Math.round(budgetS)} s exceeded; cleaning up`);
    void Promise.all([...cleanups].map((c) => c())).finally(() => process.exit(2));
  }, budgetS * 1000);
  watchdog.unref();
  const loadBefore = loadavg();
  log(
    `backends ${backends.join(', ')}; ${fmt(opts.events)} events; ${opts.rounds} rounds; keep-up ${fmt(opts.rate)}/s for ${opts.seconds} s, interval ${opts.interval} s; loadavg ${loadBefore}`,
  );
  const hasVerify = await verifyAvailable();
  if (!hasVerify) log('skipped: audit verify not available (no `verify` under `portcullis audit --help`)');
  const results: BackendResult[] = [];
  const problems: string[] = [];
  for (const b of backends) {
    try {
      results.push(await benchBackend(b, hasVerify));
    } catch (e) {
      problems.push(`${b}: ${(e as Error).message}`);
      log(`${b}: error: ${(e as Error).stack ?? e}`);
    }
  }
  for (const c of [...cleanups]) await c();
  const loadAfter = loadavg();
  const report = {
    generated_at: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model ?? null, node: process.version },
    loadavg_before: loadBefore,
    loadavg_after: loadAfter,
    portcullis_commit: gitHead(),
    options: { ...opts, postgres: opts.postgres ? 'given (fresh database per store)' : undefined, out: undefined },
    goals: GOALS,
    audit_verify_available: hasVerify,
    problems,
    results,
  };
  mkdirSync(dirname(opts.out), { recursive: true });
  writeFileSync(opts.out, `${JSON.stringify(report, null, 2)}\n`);
  try {
    execFileSync(join(repoDir, 'node_modules', '.bin', 'biome'), ['format', '--write', opts.out], {
      cwd: repoDir,
      stdio: 'ignore',
    });
  } catch {
    // cosmetic
  }
  process.stdout.write(`${markdown(results)}\n\nloadavg before: ${loadBefore}; after: ${loadAfter}\n`);
  if (problems.length) process.stdout.write(`\nPROBLEMS:\n${problems.map((p) => `- ${p}`).join('\n')}\n`);
  process.stdout.write(`results in ${opts.out}\n`);
  return problems.length ? 1 : 0;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    log(`${sig}: cleaning up`);
    void Promise.all([...cleanups].map((c) => c())).finally(() => process.exit(130));
  });
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    log((e as Error).stack ?? String(e));
    for (const c of [...cleanups]) await c();
    process.exit(1);
  },
);
