-- Plain PostgreSQL only (decision 0008): the increments of sensor_stats_5m and
-- sensor_stats_hourly from the readings inserted: CTE ins of insert_sensor_readings.sql
-- (statement path), or exactly the readings just copied, given as arrays (bulk path,
-- decision 0016). This text continues either.
, new AS (
    SELECT tenant_id, store_id, device_id, kind, value, out_of_range,
           date_bin('5 minutes', occurred_at, timestamptz '2000-01-01 00:00:00+00') AS five,
           date_trunc('hour', occurred_at, 'UTC') AS hour
    FROM ins
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
