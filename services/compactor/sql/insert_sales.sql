-- Sales: the key into the event_keys ledger first, then the raw row for the keys this
-- statement inserted (a retry or a conflicting reuse of a stored key adds nothing).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[],
                $12::text[], $13::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, kind,
             transaction_id, terminal_id, currency, total_minor, original_transaction_id,
             content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'sales', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO sales (event_id, tenant_id, store_id, occurred_at, received_at, source, kind,
                       transaction_id, terminal_id, currency, total_minor,
                       original_transaction_id, content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source, s.kind,
           s.transaction_id, s.terminal_id, s.currency, s.total_minor,
           s.original_transaction_id, s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id
)
