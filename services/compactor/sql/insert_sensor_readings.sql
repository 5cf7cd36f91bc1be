-- Sensor readings and their increments to sensor_stats_5m and sensor_stats_hourly, in
-- one statement. Only rows inserted by this statement are counted (ins), so a
-- retried, conflicting or already applied event never adds to a rollup.
-- out_of_range: value outside [low, high] of sensor_limits for (kind, appliance), else
-- (kind, '*'); no limits row: never out of range.
WITH ins AS (
    INSERT INTO sensor_readings (event_id, tenant_id, store_id, occurred_at, received_at, source,
                                 device_id, kind, value, unit, appliance, content_hash)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                         $6::text[], $7::text[], $8::text[], $9::float8[], $10::text[], $11::text[],
                         $12::bytea[])
    ON CONFLICT (tenant_id, store_id, event_id) DO NOTHING
    RETURNING tenant_id, store_id, event_id, occurred_at, device_id, kind, value, appliance
), new AS (
    SELECT i.tenant_id, i.store_id, i.device_id, i.kind, i.value,
           date_bin('5 minutes', i.occurred_at, timestamptz '2000-01-01 00:00:00+00') AS five,
           date_trunc('hour', i.occurred_at, 'UTC') AS hour,
           coalesce(i.value < l.low OR i.value > l.high, false) AS out_of_range
    FROM ins i
    LEFT JOIN LATERAL (
        SELECT l.low, l.high
        FROM sensor_limits l
        WHERE l.kind = i.kind AND l.appliance IN (i.appliance, '*')
        ORDER BY l.appliance = '*'
        LIMIT 1
    ) l ON true
), five AS (
    INSERT INTO sensor_stats_5m (tenant_id, store_id, device_id, kind, bucket,
                                 readings, value_min, value_max, value_sum, out_of_range)
    SELECT tenant_id, store_id, device_id, kind, five,
           count(*), min(value), max(value), sum(value::numeric),
           count(*) FILTER (WHERE out_of_range)
    FROM new
    GROUP BY tenant_id, store_id, device_id, kind, five
    ON CONFLICT (tenant_id, store_id, device_id, kind, bucket) DO UPDATE SET
        readings     = sensor_stats_5m.readings + EXCLUDED.readings,
        value_min    = LEAST(sensor_stats_5m.value_min, EXCLUDED.value_min),
        value_max    = GREATEST(sensor_stats_5m.value_max, EXCLUDED.value_max),
        value_sum    = sensor_stats_5m.value_sum + EXCLUDED.value_sum,
        out_of_range = sensor_stats_5m.out_of_range + EXCLUDED.out_of_range
), hourly AS (
    INSERT INTO sensor_stats_hourly (tenant_id, store_id, device_id, kind, bucket,
                                     readings, value_min, value_max, value_sum, out_of_range)
    SELECT tenant_id, store_id, device_id, kind, hour,
           count(*), min(value), max(value), sum(value::numeric),
           count(*) FILTER (WHERE out_of_range)
    FROM new
    GROUP BY tenant_id, store_id, device_id, kind, hour
    ON CONFLICT (tenant_id, store_id, device_id, kind, bucket) DO UPDATE SET
        readings     = sensor_stats_hourly.readings + EXCLUDED.readings,
        value_min    = LEAST(sensor_stats_hourly.value_min, EXCLUDED.value_min),
        value_max    = GREATEST(sensor_stats_hourly.value_max, EXCLUDED.value_max),
        value_sum    = sensor_stats_hourly.value_sum + EXCLUDED.value_sum,
        out_of_range = sensor_stats_hourly.out_of_range + EXCLUDED.out_of_range
)
SELECT tenant_id, store_id, event_id FROM ins
