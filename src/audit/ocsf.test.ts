import { describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../events/catalogue.ts';
import type { AuditEventRow } from '../storage/ports.ts';
import { isAlert, storyKind } from './describe.ts';
import { syslogFrame } from './export-sinks.ts';
import { OCSF_CLASSES, OCSF_MAP, ocsfMapping, toOcsf } from './ocsf.ts';

const row = (over: Partial<AuditEventRow> = {}): AuditEventRow => ({
  leaf_hash: null,
  id: 7,
  type: 'login.failed',
  at: 1_700_000_000_123,
  client_id: null,
  subject: 'u1',
  jti: null,
  grant_id: null,
  request_id: 'req-1',
  actor: null,
  session_id: null,
  ip: '192.0.2.1',
  data: JSON.stringify({ username: 'alice', reason: 'bad_password', user_agent: 'UA/1' }),
  leaf_index: 41,
  ...over,
});

describe('OCSF mapping', () => {
  it('maps every catalogued event type, with an activity its class defines', () => {
    for (const t of EVENT_TYPES) expect(OCSF_MAP[t], t).toBeDefined();
    for (const [t, m] of Object.entries(OCSF_MAP)) {
      expect(OCSF_CLASSES[m.cls], t).toBeDefined();
      expect(m.activity === 99 || (m.activity >= 1 && m.activity <= 11), t).toBe(true);
    }
    expect(ocsfMapping('alert.token_anomaly')).toMatchObject({ cls: 'api_activity', severity: 4 });
  });

  it('fills class, type, time, status, user, endpoint, request and metadata (uid = leaf hash, sequence = leaf)', () => {
    const r = toOcsf(row(), { productVersion: '9.9.9', origin: 'auth.example/audit' });
    expect(r).toMatchObject({
      class_uid: 3002,
      category_uid: 3,
      activity_id: 1,
      type_uid: 300201,
      time: 1_700_000_000_123,
      status_id: 2,
      severity_id: 2,
      user: { uid: 'u1', name: 'alice' },
      src_endpoint: { ip: '192.0.2.1' },
      http_request: { uid: 'req-1', user_agent: 'UA/1' },
      metadata: { version: '1.2.0', product: { name: 'Portcullis', version: '9.9.9' }, sequence: 41 },
    });
    expect((r.metadata as { uid: string }).uid).toMatch(/^[0-9a-f]{64}$/);
    expect((r.unmapped as { data: unknown }).data).toMatchObject({ reason: 'bad_password' });
  });

  it('classifies alerts, including future alert.* events', () => {
    expect(isAlert('refresh_token.reused')).toBe(true);
    expect(isAlert('authorization_code.replayed')).toBe(true);
    expect(storyKind('alert.impossible_travel')).toBe('alert');
    expect(storyKind('token.issued')).toBe('issued');
  });
});

describe('syslog framing', () => {
  it('is RFC 6587 octet counting around an RFC 5424 message with an ASCII-only JSON MSG', () => {
    const f = syslogFrame(
      { leaf: 3, at: Date.UTC(2026, 0, 2, 3, 4, 5, 6), type: 'token.issued', severity: 4, json: '{"a":"é"}' },
      { facility: 13, appName: 'portcullis', host: 'h1', procId: '42' },
    ).toString('utf8');
    const sp = f.indexOf(' ');
    const msg = f.slice(sp + 1);
    expect(Number(f.slice(0, sp))).toBe(Buffer.byteLength(msg));
    expect(msg).toBe('<107>1 2026-01-02T03:04:05.006Z h1 portcullis 42 token.issued - {"a":"\\u00e9"}');
  });
});
