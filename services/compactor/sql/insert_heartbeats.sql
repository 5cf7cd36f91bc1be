INSERT INTO pos_heartbeats (event_id, tenant_id, store_id, occurred_at, received_at, source,
                            terminal_id, app_up, printer, network, software_version, content_hash)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::text[],
                     $12::bytea[])
ON CONFLICT (tenant_id, store_id, event_id) DO NOTHING
RETURNING tenant_id, store_id, event_id
