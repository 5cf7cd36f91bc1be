-- Plain PostgreSQL only (decision 0008): the increments of pos_uptime_daily from the
-- heartbeats inserted: CTE ins of insert_heartbeats.sql (statement path), or exactly the
-- heartbeats just copied, given as arrays (bulk path, decision 0016). This text
-- continues either. Minute masks combine with OR (migration 0005).
, new AS (
    SELECT i.*, d.day,
           set_bit(repeat('0', 1440)::bit(1440),
                   floor(extract(epoch FROM i.occurred_at - d.day) / 60)::int, 1) AS minute
    FROM ins i
    CROSS JOIN LATERAL (SELECT date_trunc('day', i.occurred_at, 'UTC') AS day) d
), daily AS (
    INSERT INTO pos_uptime_daily (tenant_id, store_id, terminal_id, bucket, heartbeats,
                                  heartbeats_app_up, heartbeats_printer_ok,
                                  heartbeats_network_online, seen_minutes, up_minutes)
    SELECT tenant_id, store_id, terminal_id, day,
           count(*),
           count(*) FILTER (WHERE app_up),
           count(*) FILTER (WHERE printer = 'ok'),
           count(*) FILTER (WHERE network = 'online'),
           bit_or(minute),
           coalesce(bit_or(minute) FILTER (WHERE app_up), repeat('0', 1440)::bit(1440))
    FROM new
    GROUP BY tenant_id, store_id, terminal_id, day
    ON CONFLICT (tenant_id, store_id, terminal_id, bucket) DO UPDATE SET
        heartbeats                = pos_uptime_daily.heartbeats + EXCLUDED.heartbeats,
        heartbeats_app_up         = pos_uptime_daily.heartbeats_app_up + EXCLUDED.heartbeats_app_up,
        heartbeats_printer_ok     = pos_uptime_daily.heartbeats_printer_ok + EXCLUDED.heartbeats_printer_ok,
        heartbeats_network_online = pos_uptime_daily.heartbeats_network_online
                                    + EXCLUDED.heartbeats_network_online,
        seen_minutes              = pos_uptime_daily.seen_minutes | EXCLUDED.seen_minutes,
        up_minutes                = pos_uptime_daily.up_minutes | EXCLUDED.up_minutes
)
