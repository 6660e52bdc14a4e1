import type { AuditEventRow, AuditExportStore, TimelineColumn } from '../storage/ports.ts';
import { parseData, type StoryKind, storyKind, summarize } from './describe.ts';

/**
 * A token's (or grant's, client's, subject's, address's) story from the event log, in order: issued, refreshed,
 * used at the gateway, denied, revoked, alerts. Events are selected by their correlation columns (docs/events.md);
 * revocations that covered a token without naming it (by grant, client, subject or signing key) are joined in
 * through the revocation event's columns and data. Read-only; sealed and not yet sealed events alike.
 */

export const TIMELINE_SELECTORS = ['grant', 'jti', 'client', 'subject', 'ip'] as const;
export type TimelineSelectorKind = (typeof TIMELINE_SELECTORS)[number];

export interface TimelineSelector {
  by: TimelineSelectorKind;
  value: string;
}

const COLUMN: Record<TimelineSelectorKind, TimelineColumn> = {
  grant: 'grant_id',
  jti: 'jti',
  client: 'client_id',
  subject: 'subject',
  ip: 'ip',
};

export const TIMELINE_DEFAULT_LIMIT = 1000;
export const TIMELINE_MAX_LIMIT = 10000;

/** Why an event is in the timeline: it names the selected value, or it reached it through a grant, client, subject or key. */
export type TimelineVia = 'direct' | 'grant' | 'client' | 'subject' | 'key';

export interface TimelineEntry {
  id: number;
  leaf_index: number | null;
  at: number;
  time: string;
  type: string;
  kind: StoryKind;
  via: TimelineVia;
  client_id: string | null;
  subject: string | null;
  jti: string | null;
  grant_id: string | null;
  session_id: string | null;
  ip: string | null;
  request_id: string | null;
  actor: string | null;
  summary: string;
  data: Record<string, unknown>;
}

export interface Timeline {
  selector: TimelineSelector;
  entries: TimelineEntry[];
  /** More events matched than the limit: the earliest `limit` are listed. */
  truncated: boolean;
}

/** Validates a selector value (ids, client ids, addresses: printable, bounded). Returns a message or undefined. */
export function selectorProblem(by: string, value: string | undefined): string | undefined {
  if (!(TIMELINE_SELECTORS as readonly string[]).includes(by)) return `unknown selector ${by.slice(0, 20)}`;
  if (value === undefined || value === '') return `${by} must not be empty`;
  if (value.length > 512 || [...value].some((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f))
    return `${by} is not a valid value`;
  return undefined;
}

export async function buildTimeline(
  store: AuditExportStore,
  sel: TimelineSelector,
  limit = TIMELINE_DEFAULT_LIMIT,
): Promise<Timeline> {
  const fetchLimit = limit + 1;
  const found = new Map<number, { row: AuditEventRow; via: TimelineVia }>();
  const add = (rows: AuditEventRow[], via: TimelineVia) => {
    for (const r of rows) if (!found.has(r.id)) found.set(r.id, { row: r, via });
  };
  add(await store.eventsBy(COLUMN[sel.by], sel.value, fetchLimit), 'direct');

  // A token that belongs to a grant: the grant's story is the token's context (its refreshes, its revocation).
  if (sel.by === 'jti') {
    const issued = [...found.values()].find((f) => f.row.type === 'token.issued')?.row;
    if (issued?.grant_id) add(await store.eventsBy('grant_id', issued.grant_id, fetchLimit), 'grant');
  }

  // Revocations that covered the tokens without naming them: by client or subject (every token issued before the
  // revocation), by signing key (every token the key signed).
  const tokens = [...found.values()].map((f) => f.row).filter((r) => r.type === 'token.issued');
  if (tokens.length) {
    const since = Math.min(...tokens.map((t) => t.at));
    if (sel.by === 'grant' || sel.by === 'jti') {
      const clients = new Set(tokens.map((t) => t.client_id).filter((v): v is string => !!v));
      const subjects = new Set(tokens.map((t) => t.subject).filter((v): v is string => !!v));
      for (const c of clients) {
        const revs = await store.eventsBy('client_id', c, fetchLimit, ['token.revoked']);
        add(
          revs.filter((r) => r.at >= since && parseData(r).by === 'client'),
          'client',
        );
      }
      for (const s of subjects) {
        const revs = await store.eventsBy('subject', s, fetchLimit, ['token.revoked']);
        add(
          revs.filter((r) => r.at >= since && parseData(r).by === 'subject'),
          'subject',
        );
      }
    }
    const kids = new Set(tokens.map((t) => parseData(t).kid).filter((k): k is string => typeof k === 'string'));
    if (kids.size) {
      const keyRevs = await store.eventsOfType(['key.revoked'], since, fetchLimit);
      add(
        keyRevs.filter((r) => kids.has(String(parseData(r).kid))),
        'key',
      );
    }
  }

  const all = [...found.values()].sort((a, b) => a.row.at - b.row.at || a.row.id - b.row.id);
  const entries = all.slice(0, limit).map(({ row, via }) => toEntry(row, via));
  return { selector: sel, entries, truncated: all.length > limit };
}

function toEntry(r: AuditEventRow, via: TimelineVia): TimelineEntry {
  const data = parseData(r);
  return {
    id: r.id,
    leaf_index: r.leaf_index,
    at: r.at,
    time: new Date(r.at).toISOString(),
    type: r.type,
    kind: storyKind(r.type),
    via,
    client_id: r.client_id,
    subject: r.subject,
    jti: r.jti,
    grant_id: r.grant_id,
    session_id: r.session_id,
    ip: r.ip,
    request_id: r.request_id,
    actor: r.actor,
    summary: summarize(r, data),
    data,
  };
}

/** The timeline as text: one line per event (time, kind, type, the ids it carries, the summary). */
export function formatTimeline(t: Timeline): string {
  const lines = [`timeline for ${t.selector.by} ${t.selector.value}: ${t.entries.length} event(s)`];
  const abbrev = (v: string | null) => (v && v.length > 14 ? `${v.slice(0, 12)}…` : v);
  for (const e of t.entries) {
    const ids = [
      e.grant_id ? `grant=${abbrev(e.grant_id)}` : '',
      e.jti ? `jti=${abbrev(e.jti)}` : '',
      e.client_id ? `client=${e.client_id}` : '',
      e.session_id ? `session=${abbrev(e.session_id)}` : '',
      e.ip ? `ip=${e.ip}` : '',
      e.request_id ? `req=${abbrev(e.request_id)}` : '',
    ]
      .filter(Boolean)
      .join(' ');
    const via = e.via === 'direct' ? '' : ` [via ${e.via}]`;
    lines.push(`${e.time}  ${e.kind.padEnd(9)} ${e.type.padEnd(28)} ${ids}${via}\n    ${e.summary}`);
  }
  if (t.truncated) lines.push(`(more events matched: the first ${t.entries.length} are shown; raise --limit)`);
  return `${lines.join('\n')}\n`;
}
