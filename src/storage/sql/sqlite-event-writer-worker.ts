import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import type { SecurityEvent } from '../../events/catalogue.ts';

// Worker side of SqliteEventWriter: one connection, one prepared statement. Batches that arrive while a commit is
// running are merged into the next transaction (group commit across batches), then each sender is answered.
const db = new Database((workerData as { file: string }).file);
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.pragma('busy_timeout = 5000');
const insert = db.prepare(
  'INSERT INTO events (type, at, client_id, subject, jti, grant_id, request_id, actor, data, leaf_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)',
);
const insertAll = db.transaction((batches: Array<{ events: SecurityEvent[] }>) => {
  for (const b of batches)
    for (const e of b.events)
      insert.run(
        e.type,
        e.at,
        e.client_id ?? null,
        e.subject ?? null,
        e.jti ?? null,
        e.grant_id ?? null,
        e.request_id ?? null,
        e.actor ?? null,
        JSON.stringify(e.data),
      );
});

let pending: Array<{ id: number; events: SecurityEvent[] }> = [];
let scheduled = false;

function commit(): void {
  scheduled = false;
  const batches = pending;
  pending = [];
  try {
    insertAll(batches);
    for (const b of batches) parentPort?.postMessage({ id: b.id });
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    for (const b of batches) parentPort?.postMessage({ id: b.id, error });
  }
}

parentPort?.on('message', (m: { id: number; events: SecurityEvent[] }) => {
  pending.push(m);
  if (!scheduled) {
    scheduled = true;
    setImmediate(commit);
  }
});
