import type { AuditEventRow, CheckpointRecord } from '../storage/ports.ts';
import { auditEntry } from './entry.ts';
import { Frontier, leafHash, verifyConsistency } from './merkle.ts';
import { type OpenedNote, openCheckpoint, type ParsedVerifierKey } from './note.ts';
import { consistencyRanges, RangeHasher } from './proofs.ts';

/**
 * `portcullis audit verify`: recomputes the audit Merkle tree from the events in leaf order and checks it against every
 * signed checkpoint (database and external copies). One pass, O(log n) memory: leaves stream in chunks, a Frontier
 * gives the root at each checkpoint's size. Every failure is a Problem; the list is in the order the stream meets
 * them, so the first one names the first bad entry (or, when an attacker also rewrote the stored leaf hashes, the
 * first checkpoint whose root fails, which bounds the altered range).
 */

export type ProblemKind =
  | 'entry_modified'
  | 'leaf_hash_missing'
  | 'leaf_missing'
  | 'leaf_duplicate'
  | 'leaf_beyond_frontier'
  | 'sealed_late'
  | 'unsealed_old'
  | 'checkpoint_malformed'
  | 'checkpoint_signature'
  | 'checkpoint_origin'
  | 'checkpoint_row'
  | 'checkpoint_root'
  | 'checkpoint_beyond_tree'
  | 'pruned_frontier'
  | 'external_root'
  | 'external_beyond_tree'
  | 'external_inconsistent'
  | 'frontier';

export interface Problem {
  kind: ProblemKind;
  message: string;
  leaf_index?: number;
  event_id?: number;
  /** The tree size of the checkpoint concerned. */
  checkpoint?: number;
  /** For external checkpoints: where they were read. */
  source?: string;
}

export interface ExternalCheckpoint {
  /** e.g. "sinks/checkpoints.jsonl:12". */
  source: string;
  note: string;
}

export interface VerifyInput {
  /** Sealed events in (leaf_index, id) order, in chunks. */
  rows: AsyncIterable<AuditEventRow[]>;
  /** Compare each row's recomputed hash with its stored leaf_hash (false for export files, which carry none). */
  checkLeafHashes: boolean;
  /** The database's checkpoints, by tree size. */
  checkpoints: CheckpointRecord[];
  external: ExternalCheckpoint[];
  keys: ParsedVerifierKey[];
  /** The log's origin (checkpoint line 1). */
  origin: string;
  /**
   * Where the stored leaves start after retention pruned the oldest (meta audit_pruned): the tree's frontier at that
   * size. Its root must equal the signed checkpoint at that size; checkpoints below it are checked for their
   * signatures only (their leaves are in the archived segments: `portcullis audit verify-segment`).
   */
  start?: Frontier;
  /** The sealer's stored frontier (meta audit_frontier), when verifying the database. */
  frontier?: Frontier;
  /** Re-read after the scan (the sealer may have extended the tree meanwhile). */
  frontierAfter?: () => Promise<Frontier | undefined>;
  /** Unsealed events, oldest id first, in chunks. */
  unsealed?: AsyncIterable<AuditEventRow[]>;
  /** How far before a checkpoint's time an event may be dated and still be sealed after it (ms). */
  graceMs: number;
}

export interface VerifyReport {
  ok: boolean;
  /** Sealed entries read. */
  entries: number;
  checkpoints: number;
  external_checkpoints: number;
  /** The newest database checkpoint's size (0 if none). */
  tree_size: number;
  /** Sealed leaves after the newest checkpoint (sealed but not yet signed over). */
  unsigned_leaves: number;
  /** Unsealed events recent enough to be waiting for the sealer. */
  pending: number;
  problems: Problem[];
  /** Wall time of the verification (reading included). */
  seconds: number;
  /** CPU time this process spent in it (user + system): steadier than wall time on a shared machine. */
  cpu_seconds: number;
}

interface OpenCp {
  size: number;
  root: Buffer;
  time: number;
  ok: boolean;
}

function openNote(note: string, keys: ParsedVerifierKey[]): { opened?: OpenedNote; error?: string } {
  let last: OpenedNote | undefined;
  try {
    for (const k of keys) {
      last = openCheckpoint(note, k);
      if (last.verified) return { opened: last };
    }
    if (!last) return { error: 'no verifier key' };
    return { opened: last };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}

const keyNames = (keys: ParsedVerifierKey[]) => keys.map((k) => `${k.name}+${k.id.toString('hex')}`).join(', ');

const tree0Root = () => new Frontier().root();

export async function verifyAuditLog(input: VerifyInput): Promise<VerifyReport> {
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  const problems: Problem[] = [];
  const keys = keyNames(input.keys);

  // 1. Every database checkpoint: a well-formed note for this log, signed by a trusted key, matching its row.
  const dbCps: OpenCp[] = [];
  for (const c of input.checkpoints) {
    const { opened, error } = openNote(c.note, input.keys);
    if (!opened) {
      problems.push({
        kind: 'checkpoint_malformed',
        checkpoint: c.tree_size,
        message: `checkpoint ${c.tree_size}: not a valid signed checkpoint note (${error})`,
      });
      continue;
    }
    const cp = opened.checkpoint;
    let ok = true;
    if (!opened.verified) {
      ok = false;
      problems.push({
        kind: 'checkpoint_signature',
        checkpoint: c.tree_size,
        message: `checkpoint ${c.tree_size}: its signature does not verify with the trusted key(s) ${keys} (forged, altered, or signed by another key)`,
      });
    }
    if (cp.origin !== input.origin) {
      ok = false;
      problems.push({
        kind: 'checkpoint_origin',
        checkpoint: c.tree_size,
        message: `checkpoint ${c.tree_size}: origin "${cp.origin}" is not this log's origin "${input.origin}"`,
      });
    }
    if (cp.size !== c.tree_size || cp.root.toString('base64') !== c.root_hash) {
      ok = false;
      problems.push({
        kind: 'checkpoint_row',
        checkpoint: c.tree_size,
        message: `checkpoint ${c.tree_size}: the row's tree_size/root_hash (${c.tree_size}, ${c.root_hash}) differ from its signed note (${cp.size}, ${cp.root.toString('base64')})`,
      });
    }
    dbCps.push({ size: cp.size, root: cp.root, time: cp.time, ok });
  }
  dbCps.sort((a, b) => a.size - b.size);
  const latest = dbCps.at(-1);
  // Retention: the stored leaves start at `pruned` (the older ones are in archived segments).
  const start = input.start && input.start.size > 0 ? input.start : undefined;
  const pruned = start?.size ?? 0;

  // 2. External copies (sinks): same checks of the note; the root is compared below.
  const extCps: Array<OpenCp & { source: string }> = [];
  for (const x of input.external) {
    const { opened, error } = openNote(x.note, input.keys);
    if (!opened) {
      problems.push({
        kind: 'checkpoint_malformed',
        source: x.source,
        message: `external checkpoint at ${x.source}: not a valid signed checkpoint note (${error})`,
      });
      continue;
    }
    const cp = opened.checkpoint;
    const ok = opened.verified && cp.origin === input.origin;
    if (!ok)
      problems.push({
        kind: 'checkpoint_signature',
        checkpoint: cp.size,
        source: x.source,
        message: `external checkpoint ${cp.size} at ${x.source}: ${opened.verified ? `origin "${cp.origin}" is not "${input.origin}"` : `its signature does not verify with the trusted key(s) ${keys}`}`,
      });
    extCps.push({ size: cp.size, root: cp.root, time: cp.time, ok, source: x.source });
  }

  // The sizes at which a root is compared, and the consistency proof of the newest external checkpoint that the
  // database's newest checkpoint should extend (computed from the recomputed leaves while they stream past).
  const dbAt = new Map<number, OpenCp>();
  for (const c of dbCps) dbAt.set(c.size, c);
  const extAt = new Map<number, Array<OpenCp & { source: string }>>();
  for (const c of extCps) extAt.set(c.size, [...(extAt.get(c.size) ?? []), c]);
  const frontierSize = input.frontier?.size;
  const beyond: Array<[leaf: number, id: number]> = []; // rows past the frontier read at the start
  let rootAtFrontier: Buffer | undefined =
    frontierSize === 0
      ? tree0Root()
      : input.start && frontierSize === input.start.size
        ? input.start.root()
        : undefined;
  const anchor = latest
    ? extCps.filter((c) => c.ok && c.size > 0 && c.size <= latest.size).sort((a, b) => b.size - a.size)[0]
    : undefined;
  // (The proof needs subtree hashes from leaf 0: not available once the oldest leaves are pruned.)
  const proofHasher =
    anchor && latest && pruned === 0 ? new RangeHasher(consistencyRanges(anchor.size, latest.size)) : undefined;

  // 3. Stream the leaves (from the pruned point, if retention pruned the oldest).
  const tree = start ? start.clone() : new Frontier();
  let expected = pruned;
  let prev: AuditEventRow | undefined;
  let lastGood = pruned; // size of the last database checkpoint whose root matched
  let prevCp: OpenCp | undefined = start ? dbAt.get(pruned) : undefined; // the checkpoint before the current leaf
  if (start) {
    const at = dbAt.get(pruned);
    if (!at?.ok || !at.root.equals(start.root()))
      problems.push({
        kind: 'pruned_frontier',
        checkpoint: pruned,
        message: `the retained log starts at leaf ${pruned} (older leaves archived and pruned), but the stored frontier there does not match a valid signed checkpoint at ${pruned}: the pruning record was altered`,
      });
  }
  let inversion: string | undefined; // first id-order inversion since lastGood (a hint for reordering)
  let entries = 0;
  const check = input.checkLeafHashes;
  const grace = input.graceMs;

  const atSize = (size: number) => {
    const root = tree.root();
    const c = dbAt.get(size);
    if (c) {
      if (!root.equals(c.root)) {
        problems.push({
          kind: 'checkpoint_root',
          checkpoint: size,
          message: `checkpoint ${size}: its root does not match the tree recomputed from the stored events: an entry among leaves ${lastGood}..${size - 1} was changed, removed, inserted or reordered${inversion ? ` (${inversion})` : ''}`,
        });
      } else {
        lastGood = size;
        inversion = undefined;
      }
      prevCp = c;
    }
    for (const x of extAt.get(size) ?? [])
      if (!root.equals(x.root))
        problems.push({
          kind: 'external_root',
          checkpoint: size,
          source: x.source,
          message: `external checkpoint ${size} at ${x.source}: its root differs from the database's tree at that size: history before leaf ${size} was rewritten`,
        });
  };

  for await (const chunk of input.rows) {
    for (const row of chunk) {
      const leaf = row.leaf_index as number;
      entries++;
      if (leaf < expected) {
        problems.push({
          kind: 'leaf_duplicate',
          leaf_index: leaf,
          event_id: row.id,
          message: `leaf ${leaf} is held by two events (ids ${prev?.id} and ${row.id}): one was inserted with a forged leaf index`,
        });
        continue;
      }
      if (leaf > expected) {
        problems.push({
          kind: 'leaf_missing',
          leaf_index: expected,
          event_id: row.id,
          message:
            leaf === expected + 1
              ? `leaf ${expected} is missing (deleted?): the next stored leaf is ${leaf} (event ${row.id})`
              : `leaves ${expected}..${leaf - 1} are missing (deleted?): the next stored leaf is ${leaf} (event ${row.id})`,
        });
        expected = leaf;
      }
      if (frontierSize !== undefined && leaf >= frontierSize && beyond.length < 1000) beyond.push([leaf, row.id]);
      const h = leafHash(auditEntry(row));
      if (check) {
        if (row.leaf_hash === null)
          problems.push({
            kind: 'leaf_hash_missing',
            leaf_index: leaf,
            event_id: row.id,
            message: `leaf ${leaf} (event ${row.id}): no leaf hash was stored with it (the sealer always stores one)`,
          });
        else if (row.leaf_hash !== h.toString('base64'))
          problems.push({
            kind: 'entry_modified',
            leaf_index: leaf,
            event_id: row.id,
            message: `leaf ${leaf} (event ${row.id}, ${row.type}): its content does not match the leaf hash sealed with it: a column was changed`,
          });
      }
      if (prevCp?.ok && row.at < prevCp.time - grace)
        problems.push({
          kind: 'sealed_late',
          leaf_index: leaf,
          event_id: row.id,
          message: `leaf ${leaf} (event ${row.id}) is dated ${new Date(row.at).toISOString()}, more than ${grace / 1000}s before checkpoint ${prevCp.size} (${new Date(prevCp.time).toISOString()}) that was signed without it: inserted after the fact`,
        });
      if (prev && row.id < prev.id && inversion === undefined)
        inversion = `leaf ${leaf} holds event ${row.id}, older than event ${prev.id} at leaf ${leaf - 1}`;
      tree.append(h);
      proofHasher?.feed(tree.size - 1, h);
      expected = leaf + 1;
      prev = row;
      if (dbAt.has(tree.size) || extAt.has(tree.size)) atSize(tree.size);
      if (tree.size === frontierSize) rootAtFrontier = tree.root();
    }
  }
  if (tree.size === 0) atSize(0);

  // 4. What the stream did not reach.
  for (const c of dbCps)
    if (c.size > tree.size)
      problems.push({
        kind: 'checkpoint_beyond_tree',
        checkpoint: c.size,
        message: `checkpoint ${c.size} covers more leaves than the database holds (${tree.size}): the newest events were deleted`,
      });
  for (const x of extCps)
    if (x.size > tree.size)
      problems.push({
        kind: 'external_beyond_tree',
        checkpoint: x.size,
        source: x.source,
        message: `external checkpoint ${x.size} at ${x.source} is beyond the database's tree (${tree.size} leaves${latest ? `, newest checkpoint ${latest.size}` : ''}): the log was truncated or rewound`,
      });
  if (proofHasher && anchor && latest && latest.size <= tree.size && anchor.size <= tree.size) {
    const proof = proofHasher.hashes();
    if (!verifyConsistency(anchor.size, latest.size, proof, anchor.root, latest.root))
      problems.push({
        kind: 'external_inconsistent',
        checkpoint: anchor.size,
        source: anchor.source,
        message: `external checkpoint ${anchor.size} at ${anchor.source}: the database's checkpoint ${latest.size} is not an extension of it (RFC 9162 consistency proof fails)`,
      });
  }

  // 5. The sealer's frontier: leaves beyond it were never assigned by the sealer; its hashes must be the tree's.
  if (input.frontier) {
    const after = (await input.frontierAfter?.()) ?? input.frontier;
    if (tree.size > after.size) {
      const first = beyond.find(([leaf]) => leaf >= after.size);
      problems.push({
        kind: 'leaf_beyond_frontier',
        leaf_index: first?.[0] ?? after.size,
        event_id: first?.[1],
        message: `leaf ${first?.[0] ?? after.size}${first ? ` (event ${first[1]})` : ''} lies beyond the sealed tree (the sealer's frontier has ${after.size} leaves, the database ${tree.size}): inserted with a forged leaf index`,
      });
    } else if (tree.size < after.size) {
      // A running sealer may have extended the tree after the last chunk was read: then the frontier read at the
      // start must still match (its size was reached and its root recorded on the way).
      const start = input.frontier;
      if (tree.size < start.size)
        problems.push({
          kind: 'frontier',
          message: `the sealer's frontier has ${start.size} leaves but the database holds ${tree.size}: the newest events were deleted`,
        });
      else if (!rootAtFrontier?.equals(start.root()))
        problems.push({
          kind: 'frontier',
          message: `the sealer's stored frontier does not match the recomputed tree of ${start.size} leaves`,
        });
    } else if (!tree.root().equals(after.root())) {
      problems.push({
        kind: 'frontier',
        message: `the sealer's stored frontier does not match the recomputed tree of ${tree.size} leaves`,
      });
    }
  }

  // 6. Unsealed events: recent ones wait for the sealer; one dated well before the newest checkpoint should have
  // been sealed by it, so it was inserted afterwards.
  let pending = 0;
  const newest = [...dbCps].reverse().find((c) => c.ok);
  if (input.unsealed)
    for await (const chunk of input.unsealed)
      for (const e of chunk) {
        if (newest && e.at < newest.time - grace)
          problems.push({
            kind: 'unsealed_old',
            event_id: e.id,
            message: `event ${e.id} (${e.type}) is unsealed but dated ${new Date(e.at).toISOString()}, more than ${grace / 1000}s before checkpoint ${newest.size} (${new Date(newest.time).toISOString()}): inserted after sealing`,
          });
        else pending++;
      }

  return {
    ok: problems.length === 0,
    entries,
    checkpoints: dbCps.length,
    external_checkpoints: extCps.length,
    tree_size: latest?.size ?? 0,
    unsigned_leaves: Math.max(0, tree.size - (latest?.size ?? 0)),
    pending,
    problems,
    seconds: (performance.now() - started) / 1000,
    cpu_seconds: (() => {
      const c = process.cpuUsage(cpu0);
      return (c.user + c.system) / 1e6;
    })(),
  };
}
