INSERT INTO sensor_readings (event_id, tenant_id, store_id, occurred_at, received_at, source,
                             device_id, kind, value, unit, appliance, content_hash)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::text[],
                     $12::bytea[])
ON CONFLICT (tenant_id, store_id, event_id) DO NOTHING
RETURNING tenant_id, store_id, event_id
