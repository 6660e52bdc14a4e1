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

export interface ClientStore {
  get(clientId: string): Promise<ClientRecord | undefined>;
  list(): Promise<ClientRecord[]>;
  upsert(client: ClientRecord): Promise<void>;
  delete(clientId: string): Promise<boolean>;
}

export interface UserStore {
  getByUsername(username: string): Promise<UserRecord | undefined>;
  list(): Promise<UserRecord[]>;
  upsert(user: UserRecord): Promise<void>;
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

export interface MetaStore {
  get(key: string): Promise<string | undefined>;
  set(key: string, value: string): Promise<void>;
}

/** The unit of work: every store bound to one connection or transaction. */
export interface Stores {
  clients: ClientStore;
  users: UserStore;
  keys: KeyStore;
  revocations: RevocationStore;
  replay: ReplayStore;
  events: EventStore;
  meta: MetaStore;
}

export interface Storage extends Stores {
  readonly dialect: 'sqlite' | 'postgres';
  /** Runs fn in one transaction; every write through the given stores commits or rolls back together. */
  withTransaction<T>(fn: (tx: Stores) => Promise<T>): Promise<T>;
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
