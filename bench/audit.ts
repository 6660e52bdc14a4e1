/**
 * Audit log benchmark: sealing throughput (events/s) and `portcullis audit verify` throughput (entries/s).
 *
 *   node bench/audit.ts                         # 200,000 events on SQLite (temp dir)
 *   node bench/audit.ts --events 500000 --storage postgres://postgres@127.0.0.1:5432/bench_db
 *
 * Writes N token.issued-like events (all columns filled, ~200-byte data) through the event store, then times one
 * Sealer.sealOnce() over the whole backlog (chunks of 5000 per transaction, as the server does), then runs the real
 * `audit verify --json --key K` as a process and reports its in-process rate (entries / verify seconds) and the
 * process wall time. Results go to stdout and bench/results/audit-latest.json.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { auditOrigin, ensureAuditKey, Sealer } from '../src/audit/sealer.ts';
import { loadKek } from '../src/keys/kek.ts';
import { systemClock } from '../src/lib/clock.ts';
import { loadConfig, openMigrated } from '../src/main.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? fallback) : fallback;
};
const events = Number(arg('events', '200000'));
const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-audit-'));
const storageUrl = arg('storage', `sqlite:${join(dir, 'bench.db')}`);
const configPath = join(dir, 'portcullis.json');
writeFileSync(
  configPath,
  JSON.stringify({
    issuer: 'https://bench.example.test',
    storage: { url: storageUrl },
    keys: { kek_file: join(dir, 'kek') },
  }),
);

const { config } = loadConfig(configPath);
const { storage } = await openMigrated(config, systemClock);
const kek = loadKek(config.keys.kek_file, { create: true });
const origin = auditOrigin(config);
const key = await ensureAuditKey(storage, kek, origin, systemClock, 'bench');
const sealer = new Sealer(storage, systemClock, origin, key);
await sealer.sealOnce(); // seal what migrations wrote: the timed round covers only the bench events

let t = performance.now();
const now = Date.now();
for (let i = 0; i < events; i += 5000) {
  const batch = Array.from({ length: Math.min(5000, events - i) }, (_, j) => ({
    type: 'token.issued' as const,
    at: now + i + j,
    client_id: 'svc',
    subject: 'svc',
    jti: randomBytes(16).toString('base64url'),
    grant_id: randomBytes(12).toString('base64url'),
    request_id: randomBytes(8).toString('hex'),
    ip: '127.0.0.1',
    actor: 'svc',
    data: {
      grant_type: 'client_credentials',
      scope: 'orders:read orders:write',
      resource: ['https://api.example.com'],
    },
  }));
  await storage.events.appendMany(batch);
}
const writeS = (performance.now() - t) / 1000;

t = performance.now();
const cpu0 = process.cpuUsage();
const sealed = await sealer.sealOnce();
const sealS = (performance.now() - t) / 1000;
const sealCpu = process.cpuUsage(cpu0);
const sealCpuS = (sealCpu.user + sealCpu.system) / 1e6;
await storage.close();

t = performance.now();
const out = execFileSync(
  process.execPath,
  [join(ROOT, 'src', 'main.ts'), 'audit', 'verify', '--config', configPath, '--json', '--key', sealer.verifierKey],
  { encoding: 'utf8', maxBuffer: 1 << 26 },
);
const wallS = (performance.now() - t) / 1000;
const report = JSON.parse(out) as { ok: boolean; entries: number; seconds: number; cpu_seconds: number };
if (!report.ok) throw new Error(`verify failed: ${out.slice(0, 2000)}`);

const result = {
  date: new Date().toISOString(),
  node: process.version,
  storage: storageUrl.startsWith('sqlite:') ? 'sqlite' : 'postgres',
  events,
  write_events_per_s: Math.round(events / writeS),
  sealed: sealed.sealed,
  seal_seconds: Number(sealS.toFixed(3)),
  seal_events_per_s: Math.round(sealed.sealed / sealS),
  seal_cpu_seconds: Number(sealCpuS.toFixed(3)),
  load_average: loadavg()
    .map((l) => l.toFixed(2))
    .join(' '),
  verify_entries: report.entries,
  verify_seconds: Number(report.seconds.toFixed(3)),
  verify_entries_per_s: Math.round(report.entries / report.seconds),
  verify_cpu_seconds: Number(report.cpu_seconds.toFixed(3)),
  verify_entries_per_cpu_s: Math.round(report.entries / report.cpu_seconds),
  verify_process_wall_seconds: Number(wallS.toFixed(3)),
  goals: {
    'sealing >= 20,000 events/s': sealed.sealed / sealS >= 20_000,
    'verify >= 200,000 entries/s': report.entries / report.seconds >= 200_000,
  },
};
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(
  join(ROOT, 'bench', 'results', `audit-${result.storage}-latest.json`),
  `${JSON.stringify(result, null, 2)}\n`,
);
if (storageUrl.startsWith('sqlite:') && !process.argv.includes('--keep')) rmSync(dir, { recursive: true, force: true });
else process.stdout.write(`kept ${dir}\n`);
