import type { Generated } from 'kysely';

/** Row shapes as stored. Times are epoch milliseconds; booleans are 0/1; structured values are JSON text. */
export interface DB {
  clients: {
    client_id: string;
    client_name: string | null;
    secret_hash: string | null;
    token_endpoint_auth_method: string;
    token_endpoint_auth_signing_alg: string | null;
    grant_types: string;
    redirect_uris: string;
    scope: string;
    resources: string;
    jwks: string | null;
    jwks_uri: string | null;
    disabled: number;
    post_logout_redirect_uris: string;
    require_pushed_authorization_requests: number;
    metadata: string;
    source: string;
    created_at: number;
    updated_at: number;
  };
  users: {
    id: string;
    username: string;
    password_hash: string | null;
    email: string | null;
    name: string | null;
    disabled: number;
    source: string;
    created_at: number;
    updated_at: number;
  };
  account_guard: {
    user_id: string;
    failures: number;
    last_failure_at: number;
    locked_until: number | null;
  };
  signing_keys: {
    kid: string;
    alg: string;
    state: string;
    public_jwk: string;
    private_enc: string;
    created_at: number;
    activates_at: number;
    deactivated_at: number | null;
    retire_at: number | null;
    revoked_at: number | null;
  };
  revocations: {
    id: Generated<number>;
    kind: string;
    value: string;
    revoked_at: number;
    expires_at: number;
    reason: string | null;
  };
  used_once: {
    key: string;
    expires_at: number;
  };
  events: {
    id: Generated<number>;
    type: string;
    at: number;
    client_id: string | null;
    subject: string | null;
    jti: string | null;
    grant_id: string | null;
    request_id: string | null;
    actor: string | null;
    data: string;
    session_id: string | null;
    ip: string | null;
    /** Set once, when the sealer appends the event to the audit Merkle tree (src/audit/sealer.ts). */
    leaf_index: number | null;
    /** Base64 RFC 9162 leaf hash of the event's entry, written with leaf_index (migration 0011). */
    leaf_hash: string | null;
  };
  audit_checkpoints: {
    tree_size: number;
    root_hash: string;
    at: number;
    key_id: string;
    note: string;
  };
  audit_export_cursors: {
    sink: string;
    /** The last leaf index the sink acknowledged; -1 before the first. */
    last_leaf: number;
    updated_at: number;
  };
  audit_keys: {
    key_id: string;
    name: string;
    public_key: string;
    private_key: string;
    created_at: number;
    retired_at: number | null;
  };
  meta: {
    key: string;
    value: string;
  };
  sessions: {
    id: string;
    user_id: string | null;
    auth_time: number | null;
    amr: string;
    acr: string | null;
    created_at: number;
    last_seen_at: number;
    expires_at: number;
    ended_at: number | null;
    ended_reason: string | null;
  };
  grants: {
    id: string;
    user_id: string;
    client_id: string;
    scope: string;
    resources: string;
    session_id: string | null;
    auth_time: number | null;
    acr: string | null;
    amr: string;
    created_at: number;
    revoked_at: number | null;
    revoked_reason: string | null;
  };
  authorization_codes: {
    code_hash: string;
    grant_id: string;
    client_id: string;
    user_id: string;
    redirect_uri: string;
    code_challenge: string;
    code_challenge_method: string;
    scope: string;
    resources: string;
    nonce: string | null;
    auth_time: number;
    acr: string | null;
    amr: string;
    session_id: string | null;
    created_at: number;
    expires_at: number;
    redeemed_at: number | null;
    dpop_jkt: string | null;
  };
  refresh_tokens: {
    token_hash: string;
    grant_id: string;
    client_id: string;
    user_id: string;
    scope: string;
    resources: string;
    created_at: number;
    idle_expires_at: number;
    expires_at: number;
    rotated_at: number | null;
    replaced_by: string | null;
    jkt: string | null;
  };
  consents: {
    user_id: string;
    client_id: string;
    scope: string;
    resources: string;
    created_at: number;
    updated_at: number;
  };
  authorization_requests: {
    id_hash: string;
    kind: string;
    client_id: string;
    params: string;
    created_at: number;
    expires_at: number;
    used_at: number | null;
  };
  device_codes: {
    device_code_hash: string;
    user_code: string;
    client_id: string;
    scope: string;
    resources: string;
    status: string;
    interval_s: number;
    last_poll_at: number | null;
    user_id: string | null;
    session_id: string | null;
    auth_time: number | null;
    acr: string | null;
    amr: string | null;
    created_at: number;
    expires_at: number;
    decided_at: number | null;
    redeemed_at: number | null;
  };
  mfa_totp: {
    user_id: string;
    secret_enc: string;
    confirmed: number;
    last_step: number;
    created_at: number;
    confirmed_at: number | null;
    last_used_at: number | null;
  };
  webauthn_credentials: {
    id: string;
    user_id: string;
    public_key: string;
    counter: number;
    transports: string;
    name: string;
    created_at: number;
    last_used_at: number | null;
  };
  recovery_codes: {
    user_id: string;
    code_hash: string;
    created_at: number;
    used_at: number | null;
  };
  mfa_failures: {
    user_id: string;
    failures: number;
    window_start: number;
    locked_until: number | null;
  };
  mfa_challenges: {
    id: string;
    challenge: string;
    expires_at: number;
  };
}
