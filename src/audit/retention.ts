import { createHash, type KeyObject } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Clock } from '../lib/clock.ts';
import type { AuditEventRow, AuditKeyRecord, CheckpointRecord, Storage } from '../storage/ports.ts';
import { eventLeafHash } from './entry.ts';
import { Frontier } from './merkle.ts';
import { openCheckpoint, openNote, type ParsedVerifierKey, signNote } from './note.ts';

/**
 * Retention: the oldest part of the log is archived to a signed segment file, then (optionally) pruned from the
 * database, while what remains still verifies against the signed checkpoints.
 *
 * A segment covers leaves [from, to) where both ends are checkpoint sizes (0 counts as one). Its file is JSON
 * lines: a header with the origin, the range, the tree frontier at `from` and the signed checkpoints at `from` and
 * `to`; then one line per event in the `entries` export format ({"leaf_index", "event"}); then a trailer whose
 * signed note (the audit key) covers the SHA-256 of every byte before it. So a segment verifies on its own with
 * the verifier key: the frontier's root is the signed root at `from`, the entries extend it to the signed root at
 * `to`, and the signature binds the whole file.
 *
 * Pruning deletes leaves below `to` and keeps the frontier at `to` (meta `audit_pruned`) so verification resumes
 * from it; its root must equal the signed checkpoint at `to`, which an attacker cannot forge.
 */

export const SEGMENT_FORMAT = 'portcullis-audit-segment/1';

export interface SegmentHeader {
  format: typeof SEGMENT_FORMAT;
  origin: string;
  from: number;
  to: number;
  frontier: { size: number; hashes: string[] };
  checkpoint_from: string | null;
  checkpoint_to: string;
  created_at: number;
}

export interface PrunedState {
  size: number;
  hashes: string[];
}

export async function prunedState(storage: Pick<Storage, 'meta'>): Promise<Frontier> {
  const text = await storage.meta.get('audit_pruned');
  return text ? Frontier.fromJSON(JSON.parse(text) as PrunedState) : new Frontier();
}

function rowJson(r: AuditEventRow): Record<string, unknown> {
  const { leaf_index: _l, ...event } = r;
  return event;
}

/** Picks the newest checkpoint signed at or before `cutoffMs` (its events are all at least that old). */
export async function checkpointBefore(storage: Storage, cutoffMs: number): Promise<CheckpointRecord | undefined> {
  return (await storage.audit.checkpoints()).filter((c) => c.at <= cutoffMs).at(-1);
}

export interface ArchiveResult {
  file: string;
  from: number;
  to: number;
  sha256: string;
  pruned: boolean;
}

/**
 * Writes the segment [pruned size, toSize) to `dir` (toSize must be a checkpoint's tree size), checking on the way
 * that the stored events still hash to the signed roots (a tampered range is refused, not archived). With prune,
 * deletes the archived events in one transaction with the `audit.pruned` event.
 */
export async function archiveSegment(
  storage: Storage,
  o: {
    dir: string;
    toSize: number;
    key: { record: AuditKeyRecord; privateKey: KeyObject };
    verifier: ParsedVerifierKey;
    clock: Clock;
    prune: boolean;
    actor: string;
  },
): Promise<ArchiveResult> {
  const checkpoints = await storage.audit.checkpoints();
  const to = checkpoints.find((c) => c.tree_size === o.toSize);
  if (!to) throw new Error(`no checkpoint with tree size ${o.toSize}: a segment must end at a checkpoint`);
  const frontier = await prunedState(storage);
  const from = frontier.size;
  if (o.toSize <= from)
    throw new Error(`leaves below ${from} are already pruned: nothing to archive up to ${o.toSize}`);
  const fromCp = from === 0 ? undefined : checkpoints.find((c) => c.tree_size === from);
  if (from > 0 && !fromCp) throw new Error(`no checkpoint at the pruned size ${from}`);
  for (const cp of [fromCp, to]) {
    if (cp && !openCheckpoint(cp.note, o.verifier).verified)
      throw new Error(
        `checkpoint at tree size ${cp.tree_size} does not verify with the audit key: refusing to archive`,
      );
  }
  if (fromCp && frontier.root().toString('base64') !== fromCp.root_hash)
    throw new Error(`the pruned frontier does not match the signed checkpoint at ${from}: refusing to archive`);

  mkdirSync(resolve(o.dir), { recursive: true });
  const name = `${o.key.record.name.replace(/[^A-Za-z0-9._-]+/g, '_')}-${String(from).padStart(12, '0')}-${String(o.toSize).padStart(12, '0')}.jsonl`;
  const file = join(resolve(o.dir), name);
  const tmp = `${file}.partial`;
  const fd = openSync(tmp, 'w', 0o600);
  const hash = createHash('sha256');
  const write = (line: string) => {
    const b = Buffer.from(`${line}\n`);
    hash.update(b);
    writeSync(fd, b);
  };
  try {
    const header: SegmentHeader = {
      format: SEGMENT_FORMAT,
      origin: o.key.record.name,
      from,
      to: o.toSize,
      frontier: frontier.toJSON(),
      checkpoint_from: fromCp?.note ?? null,
      checkpoint_to: to.note,
      created_at: o.clock.nowMs(),
    };
    write(JSON.stringify(header));
    let next = from;
    while (next < o.toSize) {
      const rows = await storage.audit.sealed(next, Math.min(10_000, o.toSize - next));
      if (rows.length === 0 || rows[0]?.leaf_index !== next)
        throw new Error(`leaf ${next} is missing from the database: refusing to archive (run audit verify)`);
      for (const r of rows) {
        if (r.leaf_index !== next) throw new Error(`leaf ${next} is missing from the database: refusing to archive`);
        frontier.append(eventLeafHash(r));
        write(JSON.stringify({ leaf_index: r.leaf_index, event: rowJson(r) }));
        next++;
      }
    }
    if (frontier.root().toString('base64') !== to.root_hash)
      throw new Error(
        `the events up to ${o.toSize} do not hash to the signed root: refusing to archive (run audit verify)`,
      );
    const digest = hash.digest('base64');
    const note = signNote(
      `${SEGMENT_FORMAT}\n${o.key.record.name}\n${from} ${o.toSize}\nsha256 ${digest}\n`,
      o.key.record.name,
      o.key.privateKey,
    );
    writeSync(fd, Buffer.from(`${JSON.stringify({ signature: note })}\n`));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  const sha256 = createHash('sha256').update(readFileSync(file)).digest('hex');
  const pruned = o.prune
    ? await prune(storage, { from, to: o.toSize, frontier, file, sha256, clock: o.clock, actor: o.actor })
    : false;
  if (!o.prune)
    await storage.events.append({
      type: 'audit.archived',
      at: o.clock.nowMs(),
      actor: o.actor,
      data: { from, to: o.toSize, file: basename(file), sha256, pruned: false },
    });
  return { file, from, to: o.toSize, sha256, pruned };
}

async function prune(
  storage: Storage,
  o: { from: number; to: number; frontier: Frontier; file: string; sha256: string; clock: Clock; actor: string },
): Promise<boolean> {
  if (!existsSync(o.file)) throw new Error(`segment ${o.file} is gone: not pruning`);
  return storage.withTransaction(async (tx) => {
    await tx.audit.lockSealer(true);
    const current = await prunedState(tx);
    if (current.size !== o.from) throw new Error('another process pruned meanwhile: archive again');
    await tx.meta.set('audit_pruned', JSON.stringify(o.frontier.toJSON()));
    // The watermark the append-only triggers let DELETE go below (and nothing else may delete).
    await tx.meta.set('audit_pruned_below', String(o.to));
    const deleted = await tx.audit.pruneBelow(o.to);
    await tx.events.append({
      type: 'audit.pruned',
      at: o.clock.nowMs(),
      actor: o.actor,
      data: { from: o.from, to: o.to, deleted, file: basename(o.file), sha256: o.sha256 },
    });
    return true;
  });
}

export interface SegmentCheck {
  ok: boolean;
  from: number;
  to: number;
  entries: number;
  problem?: string;
  /** The signed checkpoint at `to` (for chaining segments and the database). */
  checkpointTo?: string;
}

/** Verifies a segment file on its own with the audit verifier key (see the module comment). */
export function verifySegmentFile(path: string, key: ParsedVerifierKey): SegmentCheck {
  const bytes = readFileSync(path);
  const text = bytes.toString('utf8');
  const lastNl = text.lastIndexOf('\n', text.length - 2);
  const fail = (problem: string, from = -1, to = -1, entries = 0): SegmentCheck => ({
    ok: false,
    from,
    to,
    entries,
    problem,
  });
  if (lastNl < 0 || !text.endsWith('\n')) return fail('not a segment file (too short or not newline-terminated)');
  const body = text.slice(0, lastNl + 1);
  let trailer: { signature?: string };
  try {
    trailer = JSON.parse(text.slice(lastNl + 1));
  } catch {
    return fail('the trailer line is not JSON');
  }
  if (typeof trailer.signature !== 'string') return fail('no signature trailer');
  let signed: { body: string; verified: boolean };
  try {
    signed = openNote(trailer.signature, key);
  } catch (e) {
    return fail(`signature trailer: ${(e as Error).message}`);
  }
  if (!signed.verified) return fail('the segment signature does not verify with the audit key');
  const [format, origin, range, digestLine] = signed.body.split('\n');
  const digest = createHash('sha256').update(body).digest('base64');
  if (format !== SEGMENT_FORMAT || origin !== key.name) return fail('the signed note is not a segment of this log');
  if (digestLine !== `sha256 ${digest}`) return fail('the file was altered after it was signed (sha256 differs)');
  const lines = body.slice(0, -1).split('\n');
  const header = JSON.parse(lines[0] ?? '{}') as SegmentHeader;
  if (`${header.from} ${header.to}` !== range) return fail('the header range differs from the signed range');
  const frontier = Frontier.fromJSON(header.frontier);
  if (frontier.size !== header.from)
    return fail('the frontier does not start at the segment start', header.from, header.to);
  if (header.from > 0) {
    const cp = header.checkpoint_from ? openCheckpoint(header.checkpoint_from, key) : undefined;
    if (!cp?.verified || cp.checkpoint.size !== header.from || !cp.checkpoint.root.equals(frontier.root()))
      return fail(
        `the starting frontier does not match the signed checkpoint at ${header.from}`,
        header.from,
        header.to,
      );
  }
  const end = openCheckpoint(header.checkpoint_to, key);
  if (!end.verified || end.checkpoint.size !== header.to)
    return fail(`the checkpoint at ${header.to} does not verify`, header.from, header.to);
  for (let i = 1; i < lines.length; i++) {
    const e = JSON.parse(lines[i] as string) as { leaf_index: number; event: AuditEventRow };
    const expected = header.from + i - 1;
    if (e.leaf_index !== expected)
      return fail(`line ${i + 1}: leaf ${e.leaf_index} where ${expected} was expected`, header.from, header.to, i - 1);
    frontier.append(eventLeafHash({ ...e.event, leaf_index: e.leaf_index }));
  }
  if (frontier.size !== header.to)
    return fail(
      `the segment holds ${frontier.size - header.from} entries, not ${header.to - header.from}`,
      header.from,
      header.to,
    );
  if (!frontier.root().equals(end.checkpoint.root))
    return fail(`the entries do not hash to the signed root at ${header.to}`, header.from, header.to, lines.length - 1);
  return { ok: true, from: header.from, to: header.to, entries: lines.length - 1, checkpointTo: header.checkpoint_to };
}
