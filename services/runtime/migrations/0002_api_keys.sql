-- Per-store API keys of the ingest HTTP API. Only a SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    key_id      text        PRIMARY KEY,
    tenant_id   text        NOT NULL,
    store_id    text        NOT NULL,
    secret_hash bytea       NOT NULL,
    label       text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_store ON api_keys (tenant_id, store_id);
