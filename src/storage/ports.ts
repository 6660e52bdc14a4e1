import type { SecurityEvent, StoredEvent } from '../events/catalogue.ts';

export interface ClientRecord {
  client_id: string;
  client_name: string | null;
  /** SHA-256 (hex) of the client secret; never the secret itself. */
  secret_hash: string | null;
  token_endpoint_auth_method: string;
  token_endpoint_auth_signing_alg: string | null;
  grant_types: string[];
  redirect_uris: string[];
  scope: string;
  resources: string[];
  jwks: { keys: Record<string, unknown>[] } | null;
  jwks_uri: string | null;
  disabled: boolean;
  /** Exact URIs accepted as post_logout_redirect_uri at the end-session endpoint (OIDC RP-Initiated Logout §3). */
  post_logout_redirect_uris: string[];
  /** RFC 9126 §6: this client's authorization requests must arrive through /par. */
  require_pushed_authorization_requests: boolean;
  /** Display and policy metadata, RFC 7591 §2 names (logo_uri, client_uri, policy_uri, tos_uri). */
  metadata: Record<string, unknown>;
  /** Where the client came from: config (reconciled at start), cli, demo. */
  source: string;
  created_at: number;
  updated_at: number;
}

export interface UserRecord {
  id: string;
  username: string;
  password_hash: string | null;
  email: string | null;
  name: string | null;
  disabled: boolean;
  source: string;
  created_at: number;
  updated_at: number;
}

export type KeyState = 'next' | 'active' | 'retiring' | 'retired' | 'revoked';

export interface SigningKeyRecord {
  kid: string;
  alg: string;
  state: KeyState;
  public_jwk: Record<string, unknown>;
  /** AES-256-GCM ciphertext of the private JWK under the key-encryption key (see keys/kek.ts). */
  private_enc: string;
  created_at: number;
  /** When the key starts signing. A key is published from created_at, which precedes this by >= JWKS max-age. */
  activates_at: number;
  /** When a later key took over signing; null while it signs or has not started. */
  deactivated_at: number | null;
  /** When it leaves the JWKS: deactivated_at + the longest lifetime of a token it signed. */
  retire_at: number | null;
  revoked_at: number | null;
}

export type RevocationKind = 'jti' | 'grant' | 'client' | 'subject' | 'kid';

export interface RevocationRecord {
  id: number;
  kind: RevocationKind;
  value: string;
  /** Tokens covered by this revocation issued before this instant are dead (ms). */
  revoked_at: number;
  /** The record can be purged after this instant: every token it covers has expired (ms). */
  expires_at: number;
  reason: string | null;
}

// ---------------------------------------------------------------------------------------------------------------
// Sign-in (issue 3). Every record below is keyed by the SHA-256 (hex) of the random value handed out (cookie, code,
// refresh token, device code, request_uri); the raw value is never stored. Times are epoch milliseconds.

/**
 * A browser session. A session with user_id null is anonymous (it exists so the login form's CSRF token is bound
 * to something); signing in always creates a new session (new id) and ends the anonymous one.
 */
export interface SessionRecord {
  /** SHA-256 hex of the cookie value. Also the `sid` claim source: see identity/sessions.ts sessionSid(). */
  id: string;
  user_id: string | null;
  /** When the user last authenticated (ms); null while anonymous. */
  auth_time: number | null;
  /** Authentication methods references (RFC 8176), e.g. ["pwd"]; MFA adds "otp", "hwk", ... */
  amr: string[];
  acr: string | null;
  created_at: number;
  last_seen_at: number;
  /** Absolute end of the session. The idle timeout is checked against last_seen_at by the identity layer. */
  expires_at: number;
  ended_at: number | null;
  /** logout, timeout, user_disabled, superseded (a new login replaced it), admin. */
  ended_reason: string | null;
}

/** What the user authorised a client to do: the family of every code, refresh and access token issued from it. */
export interface GrantRecord {
  id: string;
  user_id: string;
  client_id: string;
  /** Space-separated scopes granted. */
  scope: string;
  /** Resource indicators (RFC 8707) the grant covers. */
  resources: string[];
  /** The session (sid) the grant was made in, if any (device grants may have one too). */
  session_id: string | null;
  auth_time: number | null;
  acr: string | null;
  amr: string[];
  created_at: number;
  revoked_at: number | null;
  revoked_reason: string | null;
}

export interface AuthorizationCodeRecord {
  /** SHA-256 hex of the code. */
  code_hash: string;
  grant_id: string;
  client_id: string;
  user_id: string;
  /** Exactly as sent in the authorization request (RFC 6749 §4.1.3 compares it at the token endpoint). */
  redirect_uri: string;
  code_challenge: string;
  /** Always S256 (plain is refused at /authorize). */
  code_challenge_method: string;
  scope: string;
  resources: string[];
  nonce: string | null;
  auth_time: number;
  acr: string | null;
  amr: string[];
  /** Session id hash the code was issued in (for the ID token's sid). */
  session_id: string | null;
  created_at: number;
  expires_at: number;
  redeemed_at: number | null;
  /** RFC 9449 §10: the DPoP key (JWK SHA-256 thumbprint) the code is bound to; null when unbound. */
  dpop_jkt: string | null;
}

/** consume(): exactly one caller gets `ok`; later callers learn it was `replayed` (with the record, to revoke). */
export type CodeConsumeResult =
  | { status: 'ok'; code: AuthorizationCodeRecord }
  | { status: 'replayed'; code: AuthorizationCodeRecord }
  | { status: 'expired'; code: AuthorizationCodeRecord }
  | { status: 'not_found' };

export interface RefreshTokenRecord {
  /** SHA-256 hex of the token. */
  token_hash: string;
  grant_id: string;
  client_id: string;
  user_id: string;
  scope: string;
  resources: string[];
  created_at: number;
  /** Unused for longer than the idle lifetime: dead. Each rotation moves it forward. */
  idle_expires_at: number;
  /** Absolute end of the family: a rotated token inherits it. */
  expires_at: number;
  /** Set when the token was exchanged (spent); presenting it again is reuse (RFC 9700 §4.14.2). */
  rotated_at: number | null;
  replaced_by: string | null;
  /**
   * RFC 9449 §5: a public client's refresh token bound to its DPoP key (RFC 7638 thumbprint); refreshing it needs
   * a proof made with that key. Null when unbound (confidential clients authenticate instead).
   */
  jkt: string | null;
}

export type RefreshRotateResult =
  | { status: 'rotated'; previous: RefreshTokenRecord }
  | { status: 'reused'; previous: RefreshTokenRecord }
  | { status: 'not_found' };

export interface ConsentRecord {
  user_id: string;
  client_id: string;
  /** Space-separated, sorted. */
  scope: string;
  resources: string[];
  created_at: number;
  updated_at: number;
}

/**
 * A stored authorization request: `par` for RFC 9126 pushed requests; `interaction` for a validated request
 * waiting on login or consent (the pages refer to it by request_uri so it cannot be altered on the way); `device`
 * for a user code the user entered on the verification page, waiting for approve or deny (bound to the session).
 */
export interface AuthorizationRequestRecord {
  /** SHA-256 hex of the random part of the request_uri. */
  id_hash: string;
  kind: 'par' | 'interaction' | 'device';
  client_id: string;
  params: Record<string, string>;
  created_at: number;
  expires_at: number;
  used_at: number | null;
}

export type RequestConsumeResult =
  | { status: 'ok'; request: AuthorizationRequestRecord }
  | { status: 'used' | 'expired' | 'wrong_client'; request: AuthorizationRequestRecord }
  | { status: 'not_found' };

export type DeviceCodeStatus = 'pending' | 'approved' | 'denied' | 'redeemed';

export interface DeviceCodeRecord {
  /** SHA-256 hex of the device_code. */
  device_code_hash: string;
  /** Normalised (upper case, no dashes), 8 characters from a 20-letter alphabet (RFC 8628 §6.1). */
  user_code: string;
  client_id: string;
  scope: string;
  resources: string[];
  status: DeviceCodeStatus;
  /** Minimum polling interval in seconds; slow_down adds 5 (RFC 8628 §3.5). */
  interval_s: number;
  last_poll_at: number | null;
  /** Set at approval: who approved, in which session, how they authenticated. */
  user_id: string | null;
  session_id: string | null;
  auth_time: number | null;
  acr: string | null;
  amr: string[] | null;
  created_at: number;
  expires_at: number;
  decided_at: number | null;
  redeemed_at: number | null;
}

export interface DeviceDecision {
  status: 'approved' | 'denied';
  user_id: string;
  session_id: string | null;
  auth_time: number | null;
  acr: string | null;
  amr: string[];
}

// ---------------------------------------------------------------------------------------------------------------
// MFA (issue 4): second factors. The TOTP secret is encrypted under the KEK (it must be readable to verify codes);
// recovery codes are stored as SHA-256 of >= 80 random bits; WebAuthn stores only public keys.

export interface TotpFactorRecord {
  user_id: string;
  /** AES-256-GCM ciphertext of the base32 secret under the KEK (keys/kek.ts), AAD = "totp:" + user_id. */
  secret_enc: string;
  /** False while enrolment waits for the first code (an unconfirmed secret never passes the factor step). */
  confirmed: boolean;
  /** The last RFC 6238 time step accepted: a code is accepted only for a later step (each code once). */
  last_step: number;
  created_at: number;
  confirmed_at: number | null;
  last_used_at: number | null;
}

export interface WebAuthnCredentialRecord {
  /** Credential ID, base64url (W3C WebAuthn §6.1: rawId). */
  id: string;
  user_id: string;
  /** COSE public key, base64url. */
  public_key: string;
  /** Signature counter (W3C WebAuthn §6.1.1); 0 for authenticators that do not count. */
  counter: number;
  transports: string[];
  /** The user's name for it ("laptop"). */
  name: string;
  created_at: number;
  last_used_at: number | null;
}

export interface MfaFailureState {
  user_id: string;
  failures: number;
  window_start: number;
  locked_until: number | null;
}

export interface MfaStore {
  getTotp(userId: string): Promise<TotpFactorRecord | undefined>;
  /** Inserts or replaces the user's TOTP factor. */
  putTotp(rec: TotpFactorRecord): Promise<void>;
  /**
   * Compare-and-set: records `step` as used (and confirms the factor) only if it is later than the last used step.
   * False means the code's step was already used (a replay) or the factor is gone; exactly one of concurrent
   * callers with the same step gets true.
   */
  useTotpStep(userId: string, step: number, now: number): Promise<boolean>;
  deleteTotp(userId: string): Promise<boolean>;
  listCredentials(userId: string): Promise<WebAuthnCredentialRecord[]>;
  getCredential(id: string): Promise<WebAuthnCredentialRecord | undefined>;
  addCredential(rec: WebAuthnCredentialRecord): Promise<void>;
  /** Records a use: the new counter and last_used_at. */
  useCredential(id: string, counter: number, now: number): Promise<void>;
  deleteCredential(userId: string, id: string): Promise<boolean>;
  /** Replaces every recovery code of the user with the given hashes (a new set invalidates the old one). */
  replaceRecoveryCodes(userId: string, hashes: string[], now: number): Promise<void>;
  /** Unused recovery codes left. */
  countRecoveryCodes(userId: string): Promise<number>;
  /** Marks one unused code used: true for exactly one caller, false for unknown or already used. */
  useRecoveryCode(userId: string, hash: string, now: number): Promise<boolean>;
  deleteRecoveryCodes(userId: string): Promise<number>;
  getFailures(userId: string): Promise<MfaFailureState | undefined>;
  /** Adds one failure (a failure older than windowMs starts a new count); returns the count after it. */
  addFailure(userId: string, now: number, windowMs: number): Promise<number>;
  /** Locks the factor step until `until` and starts a new count. */
  lock(userId: string, until: number, now: number): Promise<void>;
  resetFailures(userId: string): Promise<void>;
  /** A WebAuthn challenge waiting for its answer (key: session and purpose). Replaces an earlier one. */
  putChallenge(key: string, challenge: string, expiresAt: number): Promise<void>;
  /** Takes (deletes) the challenge: single use. Undefined when absent or expired. */
  takeChallenge(key: string, now: number): Promise<string | undefined>;
}

export interface ClientStore {
  get(clientId: string): Promise<ClientRecord | undefined>;
  list(): Promise<ClientRecord[]>;
  upsert(client: ClientRecord): Promise<void>;
  delete(clientId: string): Promise<boolean>;
}

export interface UserStore {
  getByUsername(username: string): Promise<UserRecord | undefined>;
  getById(id: string): Promise<UserRecord | undefined>;
  list(): Promise<UserRecord[]>;
  upsert(user: UserRecord): Promise<void>;
}

/** Consecutive failed sign-ins of one account and its lock (identity/account-guard.ts). */
export interface AccountGuardRecord {
  user_id: string;
  /** Consecutive wrong passwords since the last successful sign-in (or unlock). */
  failures: number;
  last_failure_at: number;
  /** No password is checked before this instant (ms); null when not locked. */
  locked_until: number | null;
}

export interface AccountGuardStore {
  get(userId: string): Promise<AccountGuardRecord | undefined>;
  /** Atomically adds one failure (concurrent nodes each count theirs) and returns the new count. */
  recordFailure(userId: string, now: number): Promise<number>;
  lock(userId: string, until: number): Promise<void>;
  /** Forgets the failures and any lock; true when there was something to forget. */
  reset(userId: string): Promise<boolean>;
}

export interface SessionStore {
  insert(s: SessionRecord): Promise<void>;
  /** The session by id hash, ended or not (callers check ended_at, expires_at and the idle timeout). */
  get(idHash: string): Promise<SessionRecord | undefined>;
  /** Moves last_seen_at forward (sliding idle timeout). */
  touch(idHash: string, now: number): Promise<void>;
  /** Ends one live session. False when it was already ended or unknown. */
  end(idHash: string, now: number, reason: string): Promise<boolean>;
  /** Ends every live session of a user; returns the ended ids. */
  endByUser(userId: string, now: number, reason: string): Promise<string[]>;
  /** Deletes sessions whose absolute expiry (or end) is before `before`. */
  purgeExpired(before: number): Promise<number>;
}

export interface GrantStore {
  insert(g: GrantRecord): Promise<void>;
  get(id: string): Promise<GrantRecord | undefined>;
  listByUser(userId: string): Promise<GrantRecord[]>;
  /** Marks one grant revoked (first revocation wins). False when already revoked or unknown. */
  revoke(id: string, now: number, reason: string): Promise<boolean>;
  /** Revokes every live grant of a user (optionally only for one client); returns the revoked grant ids. */
  revokeByUser(userId: string, now: number, reason: string, clientId?: string): Promise<string[]>;
}

export interface AuthorizationCodeStore {
  insert(c: AuthorizationCodeRecord): Promise<void>;
  /** The code by hash, redeemed or not (the token endpoint checks client, redirect_uri and PKCE before consuming). */
  get(codeHash: string): Promise<AuthorizationCodeRecord | undefined>;
  /**
   * Atomically marks the code redeemed. Exactly one caller among concurrent ones gets `ok`; a code already
   * redeemed answers `replayed` (RFC 6749 §4.1.2: the caller should revoke what the code produced); a code past
   * expires_at answers `expired` and stays unredeemed.
   */
  consume(codeHash: string, now: number): Promise<CodeConsumeResult>;
  purgeExpired(before: number): Promise<number>;
}

export interface RefreshTokenStore {
  insert(r: RefreshTokenRecord): Promise<void>;
  get(tokenHash: string): Promise<RefreshTokenRecord | undefined>;
  /**
   * Compare-and-swap rotation: marks oldHash spent and inserts next, only if oldHash was not spent yet. Exactly one
   * of concurrent callers gets `rotated`; the others (and any later caller) get `reused` with the spent record.
   * Call inside withTransaction together with the event so the swap and its record commit together.
   */
  rotate(oldHash: string, next: RefreshTokenRecord, now: number): Promise<RefreshRotateResult>;
  purgeExpired(before: number): Promise<number>;
}

export interface ConsentStore {
  get(userId: string, clientId: string): Promise<ConsentRecord | undefined>;
  listByUser(userId: string): Promise<ConsentRecord[]>;
  /** Adds scopes and resources to the user's consent for the client (union with what was consented before). */
  grant(userId: string, clientId: string, scopes: string[], resources: string[], now: number): Promise<ConsentRecord>;
  /** Removes the consent. False when there was none. */
  withdraw(userId: string, clientId: string): Promise<boolean>;
}

export interface AuthorizationRequestStore {
  insert(r: AuthorizationRequestRecord): Promise<void>;
  get(idHash: string): Promise<AuthorizationRequestRecord | undefined>;
  /** Single use: exactly one caller gets `ok`, and only the client it was pushed by, before it expires. */
  consume(idHash: string, clientId: string, now: number): Promise<RequestConsumeResult>;
  purgeExpired(before: number): Promise<number>;
}

export interface DeviceCodeStore {
  insert(d: DeviceCodeRecord): Promise<void>;
  get(deviceCodeHash: string): Promise<DeviceCodeRecord | undefined>;
  /** By normalised user code (upper case, no dashes). */
  getByUserCode(userCode: string): Promise<DeviceCodeRecord | undefined>;
  /** pending -> approved/denied, once, before expiry. False if it was already decided, expired or unknown. */
  decide(userCode: string, decision: DeviceDecision, now: number): Promise<boolean>;
  /**
   * Records a poll. Returns the record as it was before this poll, and whether the client polled faster than the
   * interval (then the stored interval has grown by 5 s: RFC 8628 §3.5 slow_down). Undefined when unknown.
   */
  poll(deviceCodeHash: string, now: number): Promise<{ before: DeviceCodeRecord; slowDown: boolean } | undefined>;
  /** approved -> redeemed, exactly once across concurrent callers; returns the record or undefined. */
  redeem(deviceCodeHash: string, now: number): Promise<DeviceCodeRecord | undefined>;
  purgeExpired(before: number): Promise<number>;
}

export interface KeyStore {
  list(): Promise<SigningKeyRecord[]>;
  insert(key: SigningKeyRecord): Promise<void>;
  /** Compare-and-set on state so two nodes never both apply the same transition. */
  transition(kid: string, from: KeyState, to: KeyState, changes: Partial<SigningKeyRecord>): Promise<boolean>;
}

export interface RevocationStore {
  /** Inserts or extends a revocation. Returns the stored record. */
  add(r: Omit<RevocationRecord, 'id'>): Promise<RevocationRecord>;
  /** Records with id greater than afterId, oldest first (to tail the table). */
  listAfter(afterId: number, limit: number): Promise<RevocationRecord[]>;
  /** Whether any of the given (kind, value) pairs is revoked at or after issuedAtMs. */
  find(pairs: Array<{ kind: RevocationKind; value: string }>): Promise<RevocationRecord[]>;
  purgeExpired(nowMs: number): Promise<number>;
}

export interface ReplayStore {
  /** Records a one-time value until expiresAt. Returns false when it was already recorded (a replay). */
  useOnce(key: string, expiresAt: number): Promise<boolean>;
  purgeExpired(nowMs: number): Promise<number>;
}

export interface EventStore {
  append(event: SecurityEvent): Promise<number>;
  appendMany(events: SecurityEvent[]): Promise<void>;
  listAfter(afterId: number, limit: number): Promise<StoredEvent[]>;
  count(): Promise<number>;
}

/** An event row exactly as stored (data is the stored JSON text): what the audit log hashes. */
export interface AuditEventRow {
  id: number;
  type: string;
  at: number;
  client_id: string | null;
  subject: string | null;
  jti: string | null;
  grant_id: string | null;
  request_id: string | null;
  actor: string | null;
  session_id: string | null;
  ip: string | null;
  data: string;
  leaf_index: number | null;
  /** Base64 leaf hash the sealer stored with leaf_index (null while unsealed). */
  leaf_hash: string | null;
}

export interface CheckpointRecord {
  tree_size: number;
  /** Base64 SHA-256 root hash. */
  root_hash: string;
  at: number;
  /** Hex signed-note key id of the audit key that signed it. */
  key_id: string;
  /** The whole signed note (C2SP tlog-checkpoint). */
  note: string;
}

export interface AuditKeyRecord {
  key_id: string;
  /** The signed-note key name (the log's origin). */
  name: string;
  /** Base64 raw 32-byte Ed25519 public key. */
  public_key: string;
  /** PKCS#8 PEM encrypted under the KEK. */
  private_key: string;
  created_at: number;
  retired_at: number | null;
}

export interface AuditStore {
  /**
   * Takes the audit log's write lock for the rest of the transaction (one sealer at a time, across processes and
   * nodes). Returns false when another sealer holds it and `wait` is false.
   */
  lockSealer(wait: boolean): Promise<boolean>;
  /** Events not yet sealed, oldest id first. */
  unsealed(limit: number): Promise<AuditEventRow[]>;
  /** Gives each event its leaf index and leaf hash (base64), in one UPDATE (only ever from null). */
  assignLeaves(pairs: Array<{ id: number; leaf: number; hash: string }>): Promise<void>;
  /** Sealed events with leaf_index >= fromLeaf, in leaf order. */
  sealed(fromLeaf: number, limit: number): Promise<AuditEventRow[]>;
  /** Sealed events with these leaf indices. */
  byLeaves(leaves: number[]): Promise<AuditEventRow[]>;
  countUnsealed(): Promise<number>;
  /**
   * Sealed events with leaf_index >= fromLeaf in (leaf_index, id) order: what `audit verify` streams (a duplicated
   * leaf index, possible only if someone dropped the unique index, shows up as several rows).
   */
  scanSealed(fromLeaf: number, limit: number): Promise<AuditEventRow[]>;
  /** Stored leaf hashes of leaves [fromLeaf, toLeaf), in leaf order (proofs read these, not the rows). */
  leafHashes(
    fromLeaf: number,
    toLeaf: number,
    limit: number,
  ): Promise<Array<{ leaf_index: number; leaf_hash: string | null }>>;
  /** One event row by id (sealed or not). */
  eventRow(id: number): Promise<AuditEventRow | undefined>;
  /** Unsealed events, oldest id first, after the given id. */
  unsealedAfter(afterId: number, limit: number): Promise<AuditEventRow[]>;
  /** Deletes sealed events below this leaf index (retention, after archiving); returns how many. */
  pruneBelow(leaf: number): Promise<number>;
  addCheckpoint(c: CheckpointRecord): Promise<void>;
  /** Every checkpoint, by tree size. */
  checkpoints(): Promise<CheckpointRecord[]>;
  latestCheckpoint(): Promise<CheckpointRecord | undefined>;
  addKey(k: AuditKeyRecord): Promise<void>;
  keys(): Promise<AuditKeyRecord[]>;
}

/** Which events a timeline starts from: the events whose column equals the value. */
export type TimelineColumn = 'grant_id' | 'jti' | 'client_id' | 'subject' | 'ip' | 'session_id';

/** Timelines and export cursors (src/audit/timeline.ts, src/audit/export.ts). */
export interface AuditExportStore {
  /** Events whose column equals value (sealed or not), only of these types when given, oldest first. */
  eventsBy(column: TimelineColumn, value: string, limit: number, types?: string[]): Promise<AuditEventRow[]>;
  /** Events of these types at or after `since` (ms), oldest first, at most limit (uses the type+at index). */
  eventsOfType(types: string[], since: number, limit: number): Promise<AuditEventRow[]>;
  /** The sink's last acknowledged leaf index, or -1 when it has none yet. */
  cursor(sink: string): Promise<number>;
  /** Moves the sink's cursor to `leaf` (only forward). */
  advance(sink: string, leaf: number, now: number): Promise<void>;
  /**
   * Takes the sink's export lock for the rest of the transaction (PostgreSQL: an advisory lock distinct from the
   * sealer's). False when another node holds it. SQLite: always true (one node).
   */
  lockExport(sink: string): Promise<boolean>;
}

export interface MetaStore {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
}

/** The unit of work: every store bound to one connection or transaction. */
export interface Stores {
  clients: ClientStore;
  users: UserStore;
  accountGuard: AccountGuardStore;
  keys: KeyStore;
  revocations: RevocationStore;
  replay: ReplayStore;
  events: EventStore;
  audit: AuditStore;
  auditExport: AuditExportStore;
  meta: MetaStore;
  sessions: SessionStore;
  grants: GrantStore;
  codes: AuthorizationCodeStore;
  refreshTokens: RefreshTokenStore;
  consents: ConsentStore;
  authorizationRequests: AuthorizationRequestStore;
  deviceCodes: DeviceCodeStore;
  mfa: MfaStore;
}

export interface Storage extends Stores {
  readonly dialect: 'sqlite' | 'postgres';
  /** Runs fn in one transaction; every write through the given stores commits or rolls back together. */
  withTransaction<T>(fn: (tx: Stores) => Promise<T>): Promise<T>;
  /**
   * Calls `listener` with every revocation this process writes, once it is committed (in-process delivery to the
   * node's RevocationSet, and publication on the Redis bus).
   */
  onRevocations(listener: (recs: RevocationRecord[]) => void): void;
  /** Applies pending migrations; returns the names applied. */
  migrate(): Promise<string[]>;
  /**
   * A number that changes when another process has written to the database (SQLite: PRAGMA data_version).
   * Cheap enough to call per request; lets a node notice a CLI's key rotation or revocation at once.
   * Returns undefined when the backend cannot tell (then callers poll).
   */
  externalChangeMarker(): number | undefined;
  /** The control_version counter (bumped by triggers on keys, revocations, clients, users), read with a query. */
  controlVersion(): Promise<number>;
  /**
   * Durably appends a batch of events in one transaction, off the request path where the backend allows it
   * (SQLite: a writer thread). Used by group commit for events that are the whole state change (token.issued).
   */
  appendEventsBatch(events: SecurityEvent[]): Promise<void>;
  /** Online backup to a file (SQLite). PostgreSQL refuses with a message pointing at pg_dump. */
  backup(destination: string): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
