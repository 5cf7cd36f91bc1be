-- Inventory changes: key into event_keys first, the raw row only for keys inserted
-- (CTE ins; the writer appends the final select).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, kind, sku,
             quantity, reason, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'inventory_changes', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO inventory_changes (event_id, tenant_id, store_id, occurred_at, received_at,
                                   source, kind, sku, quantity, reason, content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source, s.kind,
           s.sku, s.quantity, s.reason, s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id, occurred_at, kind, sku, quantity
)
