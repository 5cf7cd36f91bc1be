-- POS uptime per tenant/store/terminal per UTC day (from pos_heartbeats), maintained by
-- the compactor like the rollups of migration 0004 (decision 0008): increments only
-- from heartbeats inserted in the same statement.
--
-- Minute m of a day is minute [m, m+1) of occurred_at after 00:00 UTC (0 ≤ m < 1440).
--   heartbeats                 heartbeats of the day
--   heartbeats_app_up          ... with app_up
--   heartbeats_printer_ok      ... with printer = 'ok'
--   heartbeats_network_online  ... with network = 'online'
--   seen_minutes               bit m (leftmost = minute 0) set if any heartbeat fell in minute m
--   up_minutes                 bit m set if a heartbeat with app_up fell in minute m
--   minutes_seen, minutes_up   bits set in seen_minutes, up_minutes
--   uptime_ratio               minutes_up / 1440: the share of the whole UTC day the
--                              terminal reported its app up; a silent minute counts as
--                              down (for the current day, divide by the minutes elapsed)
-- The minute masks combine with OR, so a late or repeated heartbeat in a minute already
-- seen changes nothing and the result does not depend on arrival order.
CREATE TABLE pos_uptime_daily (
    tenant_id                 text      NOT NULL,
    store_id                  text      NOT NULL,
    terminal_id               text      NOT NULL,
    bucket                    timestamptz NOT NULL,
    heartbeats                bigint    NOT NULL,
    heartbeats_app_up         bigint    NOT NULL,
    heartbeats_printer_ok     bigint    NOT NULL,
    heartbeats_network_online bigint    NOT NULL,
    seen_minutes              bit(1440) NOT NULL,
    up_minutes                bit(1440) NOT NULL,
    minutes_seen              bigint    GENERATED ALWAYS AS (bit_count(seen_minutes)) STORED,
    minutes_up                bigint    GENERATED ALWAYS AS (bit_count(up_minutes)) STORED,
    uptime_ratio              double precision
        GENERATED ALWAYS AS (bit_count(up_minutes)::double precision / 1440) STORED,
    PRIMARY KEY (tenant_id, store_id, terminal_id, bucket)
);
CREATE INDEX pos_uptime_daily_bucket ON pos_uptime_daily (bucket);
COMMENT ON TABLE pos_uptime_daily IS
    'POS terminal uptime per tenant/store/terminal per UTC day of occurred_at: heartbeat counts and per-minute masks (seen, app up); uptime_ratio = minutes with an app-up heartbeat / 1440. Maintained by the compactor in the rows'' transaction.';

-- Backfill from the heartbeats stored before this migration (see 0004: compactors of an
-- earlier version must be stopped for the upgrade).
LOCK TABLE pos_heartbeats IN SHARE MODE;
INSERT INTO pos_uptime_daily (tenant_id, store_id, terminal_id, bucket, heartbeats,
                              heartbeats_app_up, heartbeats_printer_ok,
                              heartbeats_network_online, seen_minutes, up_minutes)
SELECT h.tenant_id, h.store_id, h.terminal_id, d.day,
       count(*),
       count(*) FILTER (WHERE h.app_up),
       count(*) FILTER (WHERE h.printer = 'ok'),
       count(*) FILTER (WHERE h.network = 'online'),
       bit_or(m.minute),
       coalesce(bit_or(m.minute) FILTER (WHERE h.app_up), repeat('0', 1440)::bit(1440))
FROM pos_heartbeats h
CROSS JOIN LATERAL (SELECT date_trunc('day', h.occurred_at, 'UTC') AS day) d
CROSS JOIN LATERAL (
    SELECT set_bit(repeat('0', 1440)::bit(1440),
                   floor(extract(epoch FROM h.occurred_at - d.day) / 60)::int, 1) AS minute
) m
GROUP BY 1, 2, 3, 4;
