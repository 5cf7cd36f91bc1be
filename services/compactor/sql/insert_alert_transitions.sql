-- Alert transitions: key into event_keys first, the raw row only for keys inserted
-- (CTE ins; the writer continues the statement with state_alerts.sql and appends the
-- final select).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::text[], $13::float8[], $14::timestamptz[], $15::jsonb[],
                $16::timestamptz[], $17::text[], $18::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, alert_id,
             rule_id, state, severity, subject, summary, value, started_at, labels, ended_at,
             rule_kind, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'alert_transitions', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO alert_transitions (event_id, tenant_id, store_id, occurred_at, received_at,
                                   source, alert_id, rule_id, state, severity, subject, summary,
                                   value, started_at, labels, ended_at, rule_kind, content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source,
           s.alert_id, s.rule_id, s.state, s.severity, s.subject, s.summary, s.value,
           s.started_at, s.labels, s.ended_at, s.rule_kind, s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id, occurred_at, alert_id, rule_id, state, severity,
              subject, summary, started_at, ended_at
)
