import type { AuditEventRow, CheckpointRecord, Stores } from '../storage/ports.ts';
import { auditEntry } from './entry.ts';
import { Frontier, verifyConsistency, verifyInclusion } from './merkle.ts';

/**
 * Inclusion and consistency proofs computed from the stored leaf hashes without holding them in memory: a proof is a
 * list of Merkle tree hashes of leaf ranges (RFC 9162 §2.1.3, §2.1.4), the ranges are disjoint, and the hash of a
 * range [lo, hi) is the root of a Frontier fed with leaves lo..hi-1. So one pass over the leaf hashes in leaf order
 * (O(n) reads of 32-byte hashes, O(n) node hashes, O(log n) memory) yields the proof. `audit verify` feeds the same
 * ranges while it recomputes the tree.
 */

export type Range = readonly [lo: number, hi: number];

function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** The leaf ranges whose hashes form the inclusion proof of leaf m in the tree of size n, in proof order. */
export function inclusionRanges(m: number, n: number): Range[] {
  if (!(Number.isSafeInteger(m) && Number.isSafeInteger(n) && m >= 0 && m < n))
    throw new RangeError(`no leaf ${m} in a tree of size ${n}`);
  const out: Range[] = [];
  const walk = (lo: number, hi: number, idx: number) => {
    const size = hi - lo;
    if (size <= 1) return;
    const k = splitPoint(size);
    if (idx < k) {
      walk(lo, lo + k, idx);
      out.push([lo + k, hi]);
    } else {
      walk(lo + k, hi, idx - k);
      out.push([lo, lo + k]);
    }
  };
  walk(0, n, m);
  return out;
}

/** The leaf ranges whose hashes form the consistency proof from size m to size n (0 < m <= n), in proof order. */
export function consistencyRanges(m: number, n: number): Range[] {
  if (!(Number.isSafeInteger(m) && Number.isSafeInteger(n) && m > 0 && m <= n))
    throw new RangeError(`no consistency proof from ${m} to ${n}`);
  const out: Range[] = [];
  const sub = (lo: number, hi: number, mm: number, complete: boolean) => {
    const size = hi - lo;
    if (mm === size) {
      if (!complete) out.push([lo, hi]);
      return;
    }
    const k = splitPoint(size);
    if (mm <= k) {
      sub(lo, lo + k, mm, complete);
      out.push([lo + k, hi]);
    } else {
      sub(lo + k, hi, mm - k, false);
      out.push([lo, lo + k]);
    }
  };
  sub(0, n, m, true);
  return out;
}

/** Computes the hashes of disjoint leaf ranges from leaves fed in increasing index order. */
export class RangeHasher {
  private readonly ranges: Range[];
  private readonly order: number[];
  private readonly frontiers: Frontier[];
  private p = 0;

  constructor(ranges: Range[]) {
    this.ranges = ranges;
    this.order = ranges.map((_, i) => i).sort((a, b) => (ranges[a] as Range)[0] - (ranges[b] as Range)[0]);
    this.frontiers = ranges.map(() => new Frontier());
  }

  /** The index of the last leaf any range needs, plus one. */
  get end(): number {
    let e = 0;
    for (const [, hi] of this.ranges) e = Math.max(e, hi);
    return e;
  }

  feed(index: number, leaf: Buffer): void {
    while (this.p < this.order.length && (this.ranges[this.order[this.p] as number] as Range)[1] <= index) this.p++;
    const i = this.order[this.p];
    if (i === undefined) return;
    const [lo] = this.ranges[i] as Range;
    if (index >= lo) (this.frontiers[i] as Frontier).append(leaf);
  }

  /** The range hashes in the order given; throws if a range was not fed completely. */
  hashes(): Buffer[] {
    return this.ranges.map(([lo, hi], i) => {
      const f = this.frontiers[i] as Frontier;
      if (f.size !== hi - lo) throw new Error(`leaves ${lo}..${hi - 1} are not all present`);
      return f.root();
    });
  }
}

export class ProofError extends Error {
  readonly status: 400 | 404;
  readonly param: string | undefined;
  constructor(status: 400 | 404, message: string, param?: string) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

const CHUNK = 50_000;

/** Feeds the stored leaf hashes of [0, end) to the hasher; a missing or unset hash is an error (run audit verify). */
async function feedStored(audit: Stores['audit'], hasher: RangeHasher, end: number): Promise<void> {
  for (let from = 0; from < end; ) {
    const rows = await audit.leafHashes(from, end, CHUNK);
    if (rows.length === 0) break;
    for (const r of rows) {
      if (r.leaf_index !== from || r.leaf_hash === null)
        throw new Error(`leaf ${from} is missing or has no stored hash: run \`portcullis audit verify\``);
      hasher.feed(from, Buffer.from(r.leaf_hash, 'base64'));
      from++;
    }
  }
}

function checkpointJson(c: CheckpointRecord) {
  return { tree_size: c.tree_size, root_hash: c.root_hash, time: c.at, key_id: c.key_id, note: c.note };
}

export function eventJson(e: AuditEventRow) {
  return {
    id: e.id,
    type: e.type,
    at: e.at,
    client_id: e.client_id,
    subject: e.subject,
    jti: e.jti,
    grant_id: e.grant_id,
    session_id: e.session_id,
    ip: e.ip,
    request_id: e.request_id,
    actor: e.actor,
    data: e.data,
  };
}

export interface InclusionProofJson {
  type: 'inclusion';
  leaf_index: number;
  tree_size: number;
  leaf_hash: string;
  /** The canonical entry (docs/audit.md): leaf_hash = SHA-256(0x00 || entry). */
  entry: string;
  event: ReturnType<typeof eventJson>;
  proof: string[];
  checkpoint: ReturnType<typeof checkpointJson>;
}

export interface ConsistencyProofJson {
  type: 'consistency';
  from: ReturnType<typeof checkpointJson>;
  to: ReturnType<typeof checkpointJson>;
  proof: string[];
}

/**
 * The inclusion proof of an event against a stored checkpoint: the one of size treeSize, else the newest. The proof
 * is checked against the checkpoint's root before it is returned (a proof that cannot verify is an error, not an
 * answer). Cost: reads the stored leaf hashes of [0, tree size).
 */
export async function proveInclusion(
  audit: Stores['audit'],
  eventId: number,
  treeSize?: number,
): Promise<InclusionProofJson> {
  const row = await audit.eventRow(eventId);
  if (!row) throw new ProofError(404, `no event with id ${eventId}`);
  if (row.leaf_index === null)
    throw new ProofError(404, `event ${eventId} is not sealed yet (the sealer seals every audit.checkpoint_interval)`);
  const cp =
    treeSize === undefined
      ? await audit.latestCheckpoint()
      : (await audit.checkpoints()).find((c) => c.tree_size === treeSize);
  if (!cp)
    throw treeSize === undefined
      ? new ProofError(404, 'no checkpoint has been signed yet')
      : new ProofError(404, `no checkpoint of tree size ${treeSize}`, 'tree_size');
  if (row.leaf_index >= cp.tree_size)
    throw new ProofError(
      404,
      `event ${eventId} (leaf ${row.leaf_index}) is not covered by the checkpoint of tree size ${cp.tree_size}${treeSize === undefined ? ' yet' : ''}`,
    );
  const entry = auditEntry(row);
  const hasher = new RangeHasher(inclusionRanges(row.leaf_index, cp.tree_size));
  await feedStored(audit, hasher, hasher.end);
  const proof = hasher.hashes();
  const leaf = Buffer.from(row.leaf_hash ?? '', 'base64');
  if (!verifyInclusion(leaf, row.leaf_index, cp.tree_size, proof, Buffer.from(cp.root_hash, 'base64')))
    throw new Error(
      `the stored tree does not reproduce checkpoint ${cp.tree_size}'s root: run \`portcullis audit verify\``,
    );
  return {
    type: 'inclusion',
    leaf_index: row.leaf_index,
    tree_size: cp.tree_size,
    leaf_hash: leaf.toString('base64'),
    entry,
    event: eventJson(row),
    proof: proof.map((h) => h.toString('base64')),
    checkpoint: checkpointJson(cp),
  };
}

/** The consistency proof between two stored checkpoints. Cost: reads the stored leaf hashes of [0, to). */
export async function proveConsistency(
  audit: Stores['audit'],
  from: number,
  to: number,
): Promise<ConsistencyProofJson> {
  if (from > to) throw new ProofError(400, 'from must not be larger than to', 'from');
  const cps = await audit.checkpoints();
  const a = cps.find((c) => c.tree_size === from);
  if (!a) throw new ProofError(404, `no checkpoint of tree size ${from}`, 'from');
  const b = cps.find((c) => c.tree_size === to);
  if (!b) throw new ProofError(404, `no checkpoint of tree size ${to}`, 'to');
  let proof: Buffer[] = [];
  if (from < to && from > 0) {
    const hasher = new RangeHasher(consistencyRanges(from, to));
    await feedStored(audit, hasher, hasher.end);
    proof = hasher.hashes();
  }
  if (!verifyConsistency(from, to, proof, Buffer.from(a.root_hash, 'base64'), Buffer.from(b.root_hash, 'base64')))
    throw new Error(
      `the stored tree does not reproduce checkpoints ${from} and ${to}: run \`portcullis audit verify\``,
    );
  return {
    type: 'consistency',
    from: checkpointJson(a),
    to: checkpointJson(b),
    proof: proof.map((h) => h.toString('base64')),
  };
}
