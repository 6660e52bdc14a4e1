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
    /** Set when the event is sealed into the audit Merkle tree (a later issue). */
    leaf_index: number | null;
  };
  meta: {
    key: string;
    value: string;
  };
}
