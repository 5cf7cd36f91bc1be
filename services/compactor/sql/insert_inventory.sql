INSERT INTO inventory_changes (event_id, tenant_id, store_id, occurred_at, received_at, source,
                               kind, sku, quantity, reason, content_hash)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::bytea[])
ON CONFLICT (tenant_id, store_id, event_id) DO NOTHING
RETURNING tenant_id, store_id, event_id
