-- Transitions a batch decided, in decision order; a transition already there (same
-- event id) is not added twice.
INSERT INTO rules.outbox (consumer_group, partition, event_id, record_key, payload)
SELECT $1, k.partition, k.event_id, k.record_key, k.payload
FROM unnest($2::int[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS k(partition, event_id, record_key, payload, n)
ORDER BY k.n
ON CONFLICT (consumer_group, event_id) DO NOTHING
RETURNING seq, partition, event_id, record_key, payload, created_at
