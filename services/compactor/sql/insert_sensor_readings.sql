-- Sensor readings: key into event_keys first, the raw row only for keys inserted. CTE
-- ins holds the rows inserted; on plain PostgreSQL rollup_sensor_readings.sql
-- continues the statement with the rollup increments (from ins only).
-- out_of_range: value outside [low, high] of sensor_limits for (kind, appliance), else
-- (kind, '*'); no limits row: false. Stored with the reading (the limits as they were
-- when it was written), counted by sensor_stats_5m / sensor_stats_hourly.
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::text[],
                $12::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, device_id, kind,
             value, unit, appliance, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'sensor_readings', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO sensor_readings (event_id, tenant_id, store_id, occurred_at, received_at, source,
                                 device_id, kind, value, unit, appliance, content_hash,
                                 out_of_range)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source,
           s.device_id, s.kind, s.value, s.unit, s.appliance, s.content_hash,
           coalesce(s.value < l.low OR s.value > l.high, false)
    FROM src s
    JOIN k USING (tenant_id, store_id, event_id)
    LEFT JOIN LATERAL (
        SELECT l.low, l.high
        FROM sensor_limits l
        WHERE l.kind = s.kind AND l.appliance IN (s.appliance, '*')
        ORDER BY l.appliance = '*'
        LIMIT 1
    ) l ON true
    RETURNING tenant_id, store_id, event_id, occurred_at, device_id, kind, value, out_of_range
)
