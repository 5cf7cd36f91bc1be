-- Notification outcomes: key into event_keys first, the raw row only for keys inserted
-- (CTE ins; the writer appends the final select).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::int[], $13::text[], $14::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, alert_id,
             alert_state, receiver, channel, status, attempts, error, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'notification_outcomes', tenant_id, store_id, event_id, occurred_at, content_hash
    FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO notification_outcomes (event_id, tenant_id, store_id, occurred_at, received_at,
                                       source, alert_id, alert_state, receiver, channel, status,
                                       attempts, error, content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source,
           s.alert_id, s.alert_state, s.receiver, s.channel, s.status, s.attempts, s.error,
           s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id
)
