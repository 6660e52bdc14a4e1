import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

// Worker side of SqliteEventWriter: one connection, one prepared statement. Batches that arrive while a commit is
// running are merged into the next transaction (group commit across batches), then each sender is answered.
const db = new Database((workerData as { file: string }).file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
const insert = db.prepare(
  'INSERT INTO events (type, at, client_id, subject, jti, grant_id, request_id, actor, session_id, ip, data, leaf_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)',
);
/** Columns per event in a batch's flat rows array (see SqliteEventWriter.appendMany). */
const COLUMNS = 11;
const insertAll = db.transaction((batches: Batch[]) => {
  for (const b of batches) for (let i = 0; i < b.rows.length; i += COLUMNS) insert.run(...b.rows.slice(i, i + COLUMNS));
});

interface Batch {
  id: number;
  rows: Array<string | number | null>;
}

let pending: Batch[] = [];
let scheduled = false;

function commit(): void {
  scheduled = false;
  const batches = pending;
  pending = [];
  try {
    insertAll(batches);
    parentPort?.postMessage({ ids: batches.map((b) => b.id) });
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    parentPort?.postMessage({ ids: batches.map((b) => b.id), error });
  }
}

parentPort?.on('message', (m: Batch) => {
  pending.push(m);
  if (!scheduled) {
    scheduled = true;
    setImmediate(commit);
  }
});
