-- Both flavours: the device's last reading in device_last_seen, from the readings
-- inserted by the same statement (CTE ins of insert_sensor_readings.sql, which this
-- text continues): the greatest (occurred_at, event_id) stands, whatever the arrival
-- order.
, last_reading AS (
    INSERT INTO device_last_seen AS d (tenant_id, store_id, device_type, device_id,
                                       last_seen_at, last_event_id)
    SELECT DISTINCT ON (tenant_id, store_id, device_id)
           tenant_id, store_id, 'sensor', device_id, occurred_at, event_id
    FROM ins
    ORDER BY tenant_id, store_id, device_id, occurred_at DESC, event_id DESC
    ON CONFLICT (tenant_id, store_id, device_type, device_id) DO UPDATE SET
        last_seen_at  = EXCLUDED.last_seen_at,
        last_event_id = EXCLUDED.last_event_id
    WHERE (EXCLUDED.last_seen_at, EXCLUDED.last_event_id) > (d.last_seen_at, d.last_event_id)
)
