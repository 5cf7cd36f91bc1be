-- Dead letters: key into event_keys first, the raw row only for keys inserted
-- (CTE ins; the writer appends the final select).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::bytea[], $10::text[], $11::text[],
                $12::int[], $13::bigint[], $14::bigint[], $15::text[], $16::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, reason, field,
             original, original_event_id, source_topic, source_partition, source_offset,
             original_length, original_sha256, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'rejected_events', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO rejected_events (event_id, tenant_id, store_id, occurred_at, received_at, source,
                                 reason, field, original, original_event_id, source_topic,
                                 source_partition, source_offset, original_length,
                                 original_sha256, content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source, s.reason,
           s.field, s.original, s.original_event_id, s.source_topic, s.source_partition,
           s.source_offset, s.original_length, s.original_sha256, s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id
)
