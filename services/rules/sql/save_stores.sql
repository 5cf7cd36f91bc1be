-- Evaluation state of the stores a batch changed, all in one statement.
INSERT INTO rules.store_state (consumer_group, partition, tenant_id, store_id, state, updated_at)
SELECT $1, k.partition, k.tenant_id, k.store_id, k.state::jsonb, now()
FROM unnest($2::int[], $3::text[], $4::text[], $5::text[]) AS k(partition, tenant_id, store_id, state)
ON CONFLICT (consumer_group, partition, tenant_id, store_id)
DO UPDATE SET state = EXCLUDED.state, updated_at = now()
