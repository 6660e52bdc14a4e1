import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { type Command, Option } from 'commander';
import { Frontier } from '../audit/merkle.ts';
import { type ParsedVerifierKey, parseVerifierKey } from '../audit/note.ts';
import { ProofError, proveConsistency, proveInclusion } from '../audit/proofs.ts';
import { prunedState } from '../audit/retention.ts';
import { auditOrigin, keyRecordVerifier } from '../audit/sealer.ts';
import { type ExternalCheckpoint, type VerifyReport, verifyAuditLog } from '../audit/verify.ts';
import type { AuditEventRow, Storage } from '../storage/ports.ts';
import { configOpt, fail, withStorage } from './common.ts';

const CHUNK = 10_000;

/**
 * Sealed rows in leaf order, in chunks; the next chunk's query is in flight while the caller hashes the current one
 * (PostgreSQL: network and server time overlap with hashing; SQLite reads synchronously anyway).
 */
async function* sealedRows(storage: Storage): AsyncGenerator<AuditEventRow[]> {
  let from = 0;
  let next = storage.audit.scanSealed(from, CHUNK);
  for (;;) {
    const rows = await next;
    if (rows.length < CHUNK) {
      if (rows.length > 0) yield rows;
      return;
    }
    // A full chunk may end inside a run of rows sharing one leaf index (duplicates): hand those to the next chunk,
    // which starts at that leaf, so the run is seen whole (unless it fills a chunk by itself).
    const last = (rows.at(-1) as AuditEventRow).leaf_index as number;
    let cut = rows.length;
    while (cut > 0 && (rows[cut - 1] as AuditEventRow).leaf_index === last) cut--;
    from = cut === 0 ? last + 1 : last;
    next = storage.audit.scanSealed(from, CHUNK);
    yield cut === 0 ? rows : rows.slice(0, cut);
  }
}

async function* unsealedRows(storage: Storage): AsyncGenerator<AuditEventRow[]> {
  let after = 0;
  for (;;) {
    const rows = await storage.audit.unsealedAfter(after, CHUNK);
    if (rows.length === 0) return;
    yield rows;
    after = (rows.at(-1) as AuditEventRow).id;
  }
}

const str = (v: unknown): v is string => typeof v === 'string';
const strOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
const int = (v: unknown): v is number => Number.isSafeInteger(v);

/** Reads `audit export --format entries` JSON lines: {"leaf_index": N, "event": {...}} (docs/audit.md). */
async function* exportRows(file: string): AsyncGenerator<AuditEventRow[]> {
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Number.POSITIVE_INFINITY });
  let chunk: AuditEventRow[] = [];
  let n = 0;
  for await (const line of lines) {
    n++;
    if (line.trim() === '') continue;
    let rec: { leaf_index?: unknown; event?: Record<string, unknown> };
    try {
      rec = JSON.parse(line);
    } catch {
      throw new Error(`${file}:${n}: not a JSON line`);
    }
    const e = rec.event;
    if (
      !e ||
      !int(rec.leaf_index) ||
      !int(e.id) ||
      !str(e.type) ||
      !int(e.at) ||
      !str(e.data) ||
      !['client_id', 'subject', 'jti', 'grant_id', 'session_id', 'ip', 'request_id', 'actor'].every((k) =>
        strOrNull(e[k] ?? null),
      )
    )
      throw new Error(`${file}:${n}: not an entries record ({"leaf_index": N, "event": {id, type, at, …, data}})`);
    chunk.push({
      id: e.id,
      type: e.type,
      at: e.at,
      client_id: (e.client_id ?? null) as string | null,
      subject: (e.subject ?? null) as string | null,
      jti: (e.jti ?? null) as string | null,
      grant_id: (e.grant_id ?? null) as string | null,
      session_id: (e.session_id ?? null) as string | null,
      ip: (e.ip ?? null) as string | null,
      request_id: (e.request_id ?? null) as string | null,
      actor: (e.actor ?? null) as string | null,
      data: e.data,
      leaf_index: rec.leaf_index,
      leaf_hash: null,
    });
    if (chunk.length >= CHUNK) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

/** A checkpoint sink file (JSON lines, each with the signed `note`; docs/audit.md). */
function readCheckpointFile(file: string): ExternalCheckpoint[] {
  const out: ExternalCheckpoint[] = [];
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let note = '';
      try {
        // A file sink's record, or a stdout sink's line ({"audit_checkpoint": record}).
        const v = JSON.parse(line) as { note?: unknown; audit_checkpoint?: { note?: unknown } };
        const n = v.note ?? v.audit_checkpoint?.note;
        if (typeof n === 'string') note = n;
      } catch {
        /* reported as a malformed checkpoint */
      }
      out.push({ source: `${file}:${i + 1}`, note });
    });
  return out;
}

function printReport(r: VerifyReport, pinned: boolean): void {
  const rate = r.seconds > 0 ? Math.round(r.entries / r.seconds) : r.entries;
  const summary = `${r.entries} entries, ${r.checkpoints} checkpoints (newest: tree size ${r.tree_size}), ${r.external_checkpoints} external checkpoints, ${r.pending} unsealed event(s) pending; ${r.seconds.toFixed(2)} s (${rate} entries/s)`;
  if (r.ok) {
    process.stdout.write(`audit verify: OK: ${summary}\n`);
    if (r.unsigned_leaves > 0)
      process.stdout.write(`  ${r.unsigned_leaves} leaves are sealed but not yet covered by a checkpoint\n`);
    if (!pinned) process.stdout.write('  signatures were checked with the keys stored in the database (not pinned)\n');
    return;
  }
  const first = r.problems[0];
  process.stdout.write(`audit verify: FAILED: ${r.problems.length} problem(s)\n`);
  process.stdout.write(`first: ${first?.message}\n`);
  for (const p of r.problems.slice(1, 50)) process.stdout.write(`  - ${p.message}\n`);
  if (r.problems.length > 50) process.stdout.write(`  … and ${r.problems.length - 50} more\n`);
  process.stdout.write(`(${summary})\n`);
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** `portcullis audit verify` and `portcullis audit proof` (src/audit/verify.ts, src/audit/proofs.ts). */
export function registerVerifyCommands(audit: Command): void {
  audit
    .command('verify')
    .description(
      'recompute the audit Merkle tree from the stored events (or an export) and check every checkpoint; names the first bad entry, exits 1 on any failure',
    )
    .addOption(configOpt())
    .addOption(
      new Option(
        '--key <verifier-key>',
        'pinned signed-note verifier key (`audit key` prints it); repeat for rotated keys. Without it the keys stored in the database are trusted',
      ).argParser(collect),
    )
    .addOption(
      new Option(
        '--checkpoints <file>',
        'a checkpoint sink file (audit.checkpoint_sinks type file) to compare with the database; repeatable',
      ).argParser(collect),
    )
    .option(
      '--from-export <file>',
      'read the entries from `audit export --format entries` output instead of the events table',
    )
    .option(
      '--unsealed-grace <seconds>',
      'how far an event may be dated before a checkpoint that did not seal it (commit delay, clock skew)',
      '300',
    )
    .option('--json', 'print the report as JSON')
    .action(
      async (o: {
        config?: string;
        key?: string[];
        checkpoints?: string[];
        fromExport?: string;
        unsealedGrace: string;
        json?: boolean;
      }) => {
        let report: VerifyReport | undefined;
        let pinned = false;
        try {
          const grace = Number(o.unsealedGrace);
          if (!Number.isFinite(grace) || grace < 0) throw new Error('--unsealed-grace must be a number of seconds');
          const pins: ParsedVerifierKey[] = (o.key ?? []).map((k) => {
            try {
              return parseVerifierKey(k);
            } catch (e) {
              throw new Error(`--key ${k}: ${(e as Error).message}`);
            }
          });
          pinned = pins.length > 0;
          const external = (o.checkpoints ?? []).flatMap(readCheckpointFile);
          await withStorage(o.config, async ({ config, storage }) => {
            const keys = pinned ? pins : (await storage.audit.keys()).map(keyRecordVerifier);
            if (!pinned)
              process.stderr.write(
                'portcullis: warning: no --key given: checkpoint signatures are checked with the audit keys stored in the database, which someone with write access to it could have replaced. Pin the verifier key (`portcullis audit key`, kept elsewhere) with --key.\n',
              );
            const readFrontier = async () => {
              const t = await storage.meta.get('audit_frontier');
              return t ? Frontier.fromJSON(JSON.parse(t)) : undefined;
            };
            const fromDb = o.fromExport === undefined;
            report = await verifyAuditLog({
              rows: fromDb ? sealedRows(storage) : exportRows(o.fromExport as string),
              checkLeafHashes: fromDb,
              checkpoints: await storage.audit.checkpoints(),
              external,
              keys,
              origin: auditOrigin(config),
              start: fromDb ? await prunedState(storage) : undefined,
              frontier: fromDb ? await readFrontier() : undefined,
              frontierAfter: readFrontier,
              unsealed: fromDb ? unsealedRows(storage) : undefined,
              graceMs: grace * 1000,
            });
          });
        } catch (e) {
          fail(e);
        }
        const r = report as VerifyReport;
        if (o.json) process.stdout.write(`${JSON.stringify({ ...r, pinned_keys: pinned }, null, 2)}\n`);
        else printReport(r, pinned);
        process.exit(r.ok ? 0 : 1);
      },
    );

  audit
    .command('proof')
    .description(
      'print an inclusion proof (--event ID [--tree-size N]) or a consistency proof (--from N --to M) as JSON, for tools/verify-audit-proof.mjs',
    )
    .addOption(configOpt())
    .option('--event <id>', 'event id: prove it is in the tree of a checkpoint')
    .option('--tree-size <n>', 'the checkpoint (tree size) to prove against; default the newest')
    .option('--from <n>', 'tree size of the older checkpoint')
    .option('--to <n>', 'tree size of the newer checkpoint')
    .action(async (o: { config?: string; event?: string; treeSize?: string; from?: string; to?: string }) => {
      try {
        const n = (name: string, v: string | undefined): number | undefined => {
          if (v === undefined) return undefined;
          if (!/^(0|[1-9][0-9]{0,15})$/.test(v)) throw new Error(`${name} must be a non-negative integer`);
          return Number(v);
        };
        const event = n('--event', o.event);
        const treeSize = n('--tree-size', o.treeSize);
        const from = n('--from', o.from);
        const to = n('--to', o.to);
        if ((event === undefined) === (from === undefined && to === undefined))
          throw new Error('give either --event ID [--tree-size N] or --from N --to M');
        if (event === undefined && (from === undefined || to === undefined))
          throw new Error('a consistency proof needs both --from and --to');
        await withStorage(o.config, async ({ storage }) => {
          const proof =
            event !== undefined
              ? await proveInclusion(storage.audit, event, treeSize)
              : await proveConsistency(storage.audit, from as number, to as number);
          process.stdout.write(`${JSON.stringify(proof, null, 2)}\n`);
        });
      } catch (e) {
        fail(e instanceof ProofError ? new Error(e.message) : e);
      }
    });
}
