INSERT INTO rejected_events (event_id, tenant_id, store_id, occurred_at, received_at, source,
                             reason, field, original, original_event_id, source_topic,
                             source_partition, source_offset, original_length, original_sha256,
                             content_hash)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::text[], $7::text[], $8::text[], $9::bytea[], $10::text[], $11::text[],
                     $12::int[], $13::bigint[], $14::bigint[], $15::text[], $16::bytea[])
ON CONFLICT (tenant_id, store_id, event_id) DO NOTHING
RETURNING tenant_id, store_id, event_id
