-- Both flavours: the terminal's last heartbeat in device_last_seen, from the heartbeats
-- inserted by the same statement (CTE ins of insert_heartbeats.sql, which this text
-- continues). The last heartbeat is the one with the greatest (occurred_at, event_id):
-- a later one replaces it whatever the arrival order; an earlier one changes nothing.
, last_heartbeat AS (
    INSERT INTO device_last_seen AS d (tenant_id, store_id, device_type, device_id,
                                       last_seen_at, last_event_id, app_up, printer, network,
                                       software_version)
    SELECT DISTINCT ON (tenant_id, store_id, terminal_id)
           tenant_id, store_id, 'pos_terminal', terminal_id, occurred_at, event_id, app_up,
           printer, network, software_version
    FROM ins
    ORDER BY tenant_id, store_id, terminal_id, occurred_at DESC, event_id DESC
    ON CONFLICT (tenant_id, store_id, device_type, device_id) DO UPDATE SET
        last_seen_at     = EXCLUDED.last_seen_at,
        last_event_id    = EXCLUDED.last_event_id,
        app_up           = EXCLUDED.app_up,
        printer          = EXCLUDED.printer,
        network          = EXCLUDED.network,
        software_version = EXCLUDED.software_version
    WHERE (EXCLUDED.last_seen_at, EXCLUDED.last_event_id) > (d.last_seen_at, d.last_event_id)
)
