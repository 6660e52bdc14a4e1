/** Read-only peeks at a running server's database (the audit trail is part of the product's contract). */
import Database from 'better-sqlite3';
import pg from 'pg';
import type { RunningServer } from './server.ts';

export interface EventRow {
  id: number;
  type: string;
  at: number;
  client_id: string | null;
  subject: string | null;
  jti: string | null;
  actor: string | null;
  data: Record<string, unknown>;
}

function storageUrl(server: RunningServer): string {
  return String((server.config.storage as { url: string }).url);
}

/** Runs a read-only SELECT against the server's storage (SQLite file opened read-only, or PostgreSQL). */
export async function query<T = Record<string, unknown>>(
  server: RunningServer,
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const url = storageUrl(server);
  if (url.startsWith('sqlite:')) {
    const db = new Database(url.slice('sqlite:'.length), { readonly: true, fileMustExist: true });
    try {
      // $1.. placeholders -> ? for SQLite
      return db.prepare(sql.replace(/\$\d+/g, '?')).all(...params) as T[];
    } finally {
      db.close();
    }
  }
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows as T[];
  } finally {
    await c.end();
  }
}

export async function readEvents(server: RunningServer, where = '', params: unknown[] = []): Promise<EventRow[]> {
  const rows = await query<Record<string, unknown>>(
    server,
    `SELECT id, type, at, client_id, subject, jti, actor, data FROM events ${where} ORDER BY id`,
    params,
  );
  return rows.map((r) => ({
    id: Number(r.id),
    type: String(r.type),
    at: Number(r.at),
    client_id: (r.client_id as string | null) ?? null,
    subject: (r.subject as string | null) ?? null,
    jti: (r.jti as string | null) ?? null,
    actor: (r.actor as string | null) ?? null,
    data:
      typeof r.data === 'string'
        ? (JSON.parse(r.data) as Record<string, unknown>)
        : ((r.data as Record<string, unknown>) ?? {}),
  }));
}

/**
 * Writes to a storage URL as a database administrator would (psql / sqlite3): several statements, or a callback with
 * a query function. For tamper tests only; the server must not be running against it.
 */
export async function dbaSql(
  url: string,
  work: string | ((q: (sql: string, params?: unknown[]) => Promise<Record<string, unknown>[]>) => Promise<void>),
): Promise<void> {
  if (url.startsWith('sqlite:')) {
    const db = new Database(url.slice('sqlite:'.length), { fileMustExist: true });
    try {
      if (typeof work === 'string') db.exec(work);
      else
        await work(async (sql, params = []) => {
          const st = db.prepare(sql.replace(/\$\d+/g, '?'));
          if (st.reader) return st.all(...params) as Record<string, unknown>[];
          st.run(...params);
          return [];
        });
    } finally {
      db.close();
    }
    return;
  }
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    if (typeof work === 'string') await c.query(work);
    else await work(async (sql, params = []) => (await c.query(sql, params)).rows);
  } finally {
    await c.end();
  }
}
