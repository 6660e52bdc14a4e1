import type { AuditEventRow } from '../storage/ports.ts';
import { parseData, summarize } from './describe.ts';
import { eventLeafHash } from './entry.ts';

/**
 * Portcullis events as OCSF records (Open Cybersecurity Schema Framework, schema version 1.2.0). One table maps every
 * event type to a class, an activity, a status and a severity; docs/audit.md (Export) prints the same table.
 * Columns the classes have a place for go there (user, actor, src_endpoint.ip, http_request.uid, session); the rest of
 * the event goes under `unmapped`. metadata.uid is the event's RFC 9162 leaf hash (hex): stable, and checkable
 * against the Merkle tree; metadata.sequence is its leaf index, by which a reader drops duplicates.
 */

export const OCSF_VERSION = '1.2.0';

type OcsfClass = 'authentication' | 'account_change' | 'authorize_session' | 'entity_management' | 'api_activity';

/** class_uid and category_uid (3: Identity & Access Management, 6: Application Activity). */
export const OCSF_CLASSES: Record<OcsfClass, { class_uid: number; category_uid: number; name: string }> = {
  account_change: { class_uid: 3001, category_uid: 3, name: 'Account Change' },
  authentication: { class_uid: 3002, category_uid: 3, name: 'Authentication' },
  authorize_session: { class_uid: 3003, category_uid: 3, name: 'Authorize Session' },
  entity_management: { class_uid: 3004, category_uid: 3, name: 'Entity Management' },
  api_activity: { class_uid: 6003, category_uid: 6, name: 'API Activity' },
};

/** OCSF status_id: 1 Success, 2 Failure. */
type Status = 1 | 2;
/** OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High, 5 Critical. */
type Severity = 1 | 2 | 3 | 4 | 5;

export interface OcsfMapping {
  cls: OcsfClass;
  /** The class's activity_id (99: Other). */
  activity: number;
  status: Status;
  severity: Severity;
  /** Entity Management: what kind of entity changed. */
  entity?: string;
}

const m = (cls: OcsfClass, activity: number, status: Status = 1, severity: Severity = 1, entity?: string) =>
  entity === undefined ? { cls, activity, status, severity } : { cls, activity, status, severity, entity };

/**
 * The mapping. Activity ids: Authentication 1 Logon, 2 Logoff, 99 Other; Account Change 1 Create, 2 Enable,
 * 3 Password Change, 5 Disable, 9 Lock, 10 MFA Factor Enable, 11 MFA Factor Disable, 99 Other; Authorize Session
 * 1 Assign Privileges; Entity Management and API Activity 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
 */
export const OCSF_MAP: Record<string, OcsfMapping> = {
  'token.issued': m('api_activity', 1),
  'token.failed': m('api_activity', 1, 2, 2),
  'token.revoked': m('api_activity', 4),
  'token.introspected': m('api_activity', 2),
  'client_auth.failed': m('authentication', 1, 2, 2),
  'client_assertion.replayed': m('authentication', 1, 2, 4),
  'client.created': m('entity_management', 1, 1, 1, 'client'),
  'client.updated': m('entity_management', 3, 1, 1, 'client'),
  'client.deleted': m('entity_management', 4, 1, 1, 'client'),
  'user.created': m('account_change', 1),
  'user.updated': m('account_change', 99),
  'user.disabled': m('account_change', 5),
  'user.enabled': m('account_change', 2),
  'password.changed': m('account_change', 3),
  'login.succeeded': m('authentication', 1),
  'login.failed': m('authentication', 1, 2, 2),
  'account.locked': m('account_change', 9, 1, 3),
  'account.unlocked': m('account_change', 99),
  'rate_limit.hit': m('api_activity', 99, 2, 2),
  'mfa.enrolled': m('account_change', 10),
  'mfa.failed': m('authentication', 1, 2, 2),
  'mfa.removed': m('account_change', 11),
  'session.created': m('authentication', 1),
  'session.ended': m('authentication', 2),
  'consent.granted': m('authorize_session', 1),
  'consent.denied': m('authorize_session', 1, 2),
  'consent.withdrawn': m('entity_management', 4, 1, 1, 'consent'),
  'authorization.failed': m('authorize_session', 1, 2, 2),
  'par.created': m('api_activity', 1),
  'authorization_code.issued': m('api_activity', 1),
  'authorization_code.redeemed': m('api_activity', 3),
  'authorization_code.replayed': m('api_activity', 99, 2, 4),
  'grant.created': m('authorize_session', 1),
  'grant.revoked': m('api_activity', 4),
  'refresh_token.issued': m('api_activity', 1),
  'refresh_token.rotated': m('api_activity', 3),
  'refresh_token.reused': m('api_activity', 99, 2, 4),
  'device_code.issued': m('api_activity', 1),
  'device_code.approved': m('authorize_session', 1),
  'device_code.denied': m('authorize_session', 1, 2),
  'device_code.redeemed': m('api_activity', 3),
  'device_code.verification_failed': m('authentication', 99, 2, 2),
  'key.created': m('entity_management', 1, 1, 1, 'signing_key'),
  'key.activated': m('entity_management', 99, 1, 1, 'signing_key'),
  'key.deactivated': m('entity_management', 99, 1, 1, 'signing_key'),
  'key.retired': m('entity_management', 99, 1, 1, 'signing_key'),
  'key.revoked': m('entity_management', 4, 1, 3, 'signing_key'),
  'audit_key.created': m('entity_management', 1, 1, 1, 'audit_key'),
  'audit.archived': m('entity_management', 1, 1, 1, 'audit_segment'),
  'audit.pruned': m('entity_management', 4, 1, 2, 'audit_log'),
  'revocation.feed_lost': m('api_activity', 99, 2, 3),
  'revocation.feed_restored': m('api_activity', 99),
  'gateway.denied': m('api_activity', 99, 2, 2),
  'gateway.usage': m('api_activity', 2),
  'config.applied': m('entity_management', 3, 1, 1, 'configuration'),
  'storage.migrated': m('entity_management', 3, 1, 1, 'database'),
  'server.started': m('entity_management', 99, 1, 1, 'server'),
  'server.stopped': m('entity_management', 99, 1, 1, 'server'),
};

/** Types not in the table: alert.* are high-severity API Activity findings; anything else Other. */
export function ocsfMapping(type: string): OcsfMapping {
  const hit = OCSF_MAP[type];
  if (hit) return hit;
  if (type.startsWith('alert.')) return m('api_activity', 99, 2, 4);
  return m('api_activity', 99);
}

export interface OcsfContext {
  /** Portcullis's version (metadata.product.version). */
  productVersion: string;
  /** The audit log's origin (metadata.log_name). */
  origin: string;
}

/** The OCSF record of a sealed event. */
export function toOcsf(row: AuditEventRow, c: OcsfContext): Record<string, unknown> {
  const data = parseData(row);
  const map = ocsfMapping(row.type);
  const cls = OCSF_CLASSES[map.cls];
  const rec: Record<string, unknown> = {
    class_uid: cls.class_uid,
    class_name: cls.name,
    category_uid: cls.category_uid,
    activity_id: map.activity,
    type_uid: cls.class_uid * 100 + map.activity,
    time: row.at,
    severity_id: map.severity,
    status_id: map.status,
    message: summarize(row, data),
    metadata: {
      version: OCSF_VERSION,
      product: { name: 'Portcullis', vendor_name: 'Portcullis', version: c.productVersion },
      uid: eventLeafHash(row).toString('hex'),
      sequence: row.leaf_index,
      log_name: c.origin,
      event_code: row.type,
      ...(row.grant_id || row.session_id ? { correlation_uid: row.grant_id ?? row.session_id } : {}),
    },
  };
  const actor: Record<string, unknown> = {};
  if (row.subject) actor.user = { uid: row.subject };
  if (row.client_id) actor.app_uid = row.client_id;
  if (row.session_id) actor.session = { uid: row.session_id };
  if (Object.keys(actor).length) rec.actor = actor;
  if (row.ip) rec.src_endpoint = { ip: row.ip };
  const ua = typeof data.user_agent === 'string' ? data.user_agent : undefined;
  if (row.request_id || ua)
    rec.http_request = { ...(row.request_id ? { uid: row.request_id } : {}), ...(ua ? { user_agent: ua } : {}) };

  if (map.cls === 'authentication' || map.cls === 'account_change' || map.cls === 'authorize_session') {
    const user: Record<string, unknown> = {};
    if (row.subject) user.uid = row.subject;
    if (typeof data.username === 'string') user.name = data.username;
    rec.user = user;
  }
  if (map.cls === 'authentication') {
    if (row.session_id) rec.session = { uid: row.session_id };
    if (row.type.startsWith('mfa.')) rec.is_mfa = true;
    if (row.type === 'client_auth.failed' || row.type === 'client_assertion.replayed') rec.auth_protocol_id = 99;
  }
  if (map.cls === 'authorize_session' && typeof data.scope === 'string')
    rec.privileges = data.scope.split(' ').filter(Boolean);
  if (map.cls === 'entity_management') {
    const uid = data.kid ?? data.key_id ?? row.client_id ?? data.fingerprint ?? null;
    rec.entity = { type: map.entity ?? 'other', ...(uid !== null ? { uid: String(uid) } : {}) };
  }
  if (map.cls === 'api_activity') {
    rec.api = { operation: row.type, service: { name: 'Portcullis' } };
    if (!rec.src_endpoint) rec.src_endpoint = { svc_name: 'portcullis' };
    const resources: Array<Record<string, unknown>> = [];
    if (row.jti) resources.push({ uid: row.jti, type: 'access_token' });
    if (row.grant_id) resources.push({ uid: row.grant_id, type: 'grant' });
    if (resources.length) rec.resources = resources;
    if (!rec.actor) rec.actor = { app_name: 'Portcullis' };
  }
  rec.unmapped = {
    event_id: row.id,
    leaf_index: row.leaf_index,
    type: row.type,
    client_id: row.client_id,
    subject: row.subject,
    jti: row.jti,
    grant_id: row.grant_id,
    session_id: row.session_id,
    actor: row.actor,
    data,
  };
  return rec;
}
