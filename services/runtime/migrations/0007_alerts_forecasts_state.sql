-- Raw relations of alerts.v1, forecasts.v1 and notifications.v1, written by the
-- compactor like the other raw tables: one row per event with the record's content
-- hash. Like every raw table since migration 0008 they carry no unique key: the scoped
-- idempotency key (tenant_id, store_id, event_id) is in the key ledger event_keys
-- (relation = the table's name), and a reused id with another payload is not applied
-- but recorded in event_id_conflicts (decision 0009). Enum texts follow the
-- documented vocabulary (runtime::vocabulary).

-- alerts.v1 (AlertTransition): one row per lifecycle transition.
CREATE TABLE alert_transitions (
    event_id     uuid             NOT NULL,
    tenant_id    text             NOT NULL,
    store_id     text             NOT NULL,
    occurred_at  timestamptz      NOT NULL,
    received_at  timestamptz      NOT NULL,
    source       text             NOT NULL,
    alert_id     text             NOT NULL,
    rule_id      text             NOT NULL,
    state        text             NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity     text             NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    subject      text             NOT NULL,
    summary      text             NOT NULL,
    value        double precision,
    started_at   timestamptz      NOT NULL,
    labels       jsonb            NOT NULL,
    ended_at     timestamptz,
    rule_kind    text,
    content_hash bytea            NOT NULL
);
CREATE INDEX alert_transitions_incident ON alert_transitions (tenant_id, store_id, alert_id, started_at);
CREATE INDEX alert_transitions_time ON alert_transitions (occurred_at);
COMMENT ON TABLE alert_transitions IS
    'alerts.v1: alert lifecycle transitions (firing, resolved), one row per event; occurred_at is the transition''s event time, started_at when the condition began, ended_at (resolved only, when the producer says) when it ended.';

-- forecasts.v1 (DemandForecast): one row per forecast, its days in demand_forecast_days
-- (as sales and sale_lines). issued_at of a day is its forecast's occurred_at.
CREATE TABLE demand_forecasts (
    event_id              uuid             NOT NULL,
    tenant_id             text             NOT NULL,
    store_id              text             NOT NULL,
    occurred_at           timestamptz      NOT NULL,
    received_at           timestamptz      NOT NULL,
    source                text             NOT NULL,
    sku                   text             NOT NULL,
    method                text             NOT NULL,
    interval_level        double precision NOT NULL,
    on_hand               double precision,
    days_of_cover         double precision,
    stock_out_probability double precision,
    content_hash          bytea            NOT NULL
);
CREATE INDEX demand_forecasts_store_sku_time ON demand_forecasts (tenant_id, store_id, sku, occurred_at);
COMMENT ON TABLE demand_forecasts IS
    'forecasts.v1: demand forecasts of one sku in one store (issued at occurred_at); their daily points are in demand_forecast_days.';

CREATE TABLE demand_forecast_days (
    tenant_id  text             NOT NULL,
    store_id   text             NOT NULL,
    event_id   uuid             NOT NULL,
    day        date             NOT NULL,
    sku        text             NOT NULL,
    issued_at  timestamptz      NOT NULL,
    mean       double precision NOT NULL,
    lower      double precision NOT NULL,
    upper      double precision NOT NULL
);
CREATE INDEX demand_forecast_days_sku_day ON demand_forecast_days (tenant_id, store_id, sku, day);
CREATE INDEX demand_forecast_days_event ON demand_forecast_days (tenant_id, store_id, event_id);
COMMENT ON TABLE demand_forecast_days IS
    'The daily points of each demand forecast: forecast units (mean) and the interval lower..upper at the forecast''s interval_level.';

-- notifications.v1 (NotificationOutcome): one row per delivery outcome.
CREATE TABLE notification_outcomes (
    event_id     uuid        NOT NULL,
    tenant_id    text        NOT NULL,
    store_id     text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    source       text        NOT NULL,
    alert_id     text        NOT NULL,
    alert_state  text        NOT NULL CHECK (alert_state IN ('firing', 'resolved')),
    receiver     text        NOT NULL,
    channel      text        NOT NULL CHECK (channel IN ('webhook', 'whatsapp', 'email', 'slack')),
    status       text        NOT NULL CHECK (status IN ('delivered', 'failed', 'suppressed')),
    attempts     integer     NOT NULL,
    error        text,
    content_hash bytea       NOT NULL
);
CREATE INDEX notification_outcomes_alert ON notification_outcomes (tenant_id, store_id, alert_id);
CREATE INDEX notification_outcomes_time ON notification_outcomes (occurred_at);
COMMENT ON TABLE notification_outcomes IS
    'notifications.v1: the final outcome of delivering one alert transition to one receiver.';

-- ---- Current state -------------------------------------------------------------------
-- Kept by the compactor in the statement that inserts the raw rows (on both flavours:
-- these are not aggregates a continuous aggregate could hold), from the rows that
-- statement inserted, so each equals what the raw tables say (tests/rollups.rs checks
-- every one against a recount on random workloads).

-- The last event of every POS terminal (from pos_heartbeats) and sensor device (from
-- sensor_readings): the one with the greatest (occurred_at, event_id), whatever the
-- arrival order. A terminal's row carries its last heartbeat's health.
CREATE TABLE device_last_seen (
    tenant_id        text        NOT NULL,
    store_id         text        NOT NULL,
    device_type      text        NOT NULL CHECK (device_type IN ('pos_terminal', 'sensor')),
    device_id        text        NOT NULL,
    last_seen_at     timestamptz NOT NULL,
    last_event_id    uuid        NOT NULL,
    app_up           boolean,
    printer          text,
    network          text,
    software_version text,
    PRIMARY KEY (tenant_id, store_id, device_type, device_id)
);
COMMENT ON TABLE device_last_seen IS
    'The last heartbeat of every POS terminal and the last reading of every sensor device (greatest occurred_at, then event_id), with the terminal''s health then. Kept by the compactor; see the view device_status.';

-- When a device counts as offline for being silent, per device type (operators may
-- change it: UPDATE device_status_settings SET offline_after = '5 minutes' WHERE ...).
CREATE TABLE device_status_settings (
    device_type   text     PRIMARY KEY CHECK (device_type IN ('pos_terminal', 'sensor')),
    offline_after interval NOT NULL CHECK (offline_after > interval '0')
);
INSERT INTO device_status_settings (device_type, offline_after) VALUES
    ('pos_terminal', interval '2 minutes'),   -- heartbeats come every 30 s
    ('sensor', interval '15 minutes');
COMMENT ON TABLE device_status_settings IS
    'How long a device may be silent (no heartbeat / reading by event time) before device_status calls it offline, per device type.';

-- Device status at query time (now()):
--   offline_reason 'silent'           now() - last_seen_at > offline_after of its type
--                  'app_down'         (terminal) its last heartbeat said app_up = false
--                  'network_offline'  (terminal) its last heartbeat said network = 'offline'
--                  NULL               none of these: status 'online'
-- in that order of precedence; status is 'offline' whenever offline_reason is set.
-- A device type without a settings row is never 'silent'.
CREATE VIEW device_status WITH (security_invoker = true) AS
SELECT d.tenant_id, d.store_id, d.device_type, d.device_id, d.last_seen_at,
       CASE WHEN r.reason IS NULL THEN 'online' ELSE 'offline' END AS status,
       r.reason AS offline_reason,
       d.app_up, d.printer, d.network, d.software_version,
       s.offline_after, d.last_event_id
FROM device_last_seen d
LEFT JOIN device_status_settings s USING (device_type)
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN now() - d.last_seen_at > s.offline_after THEN 'silent'
        WHEN d.device_type = 'pos_terminal' AND NOT d.app_up THEN 'app_down'
        WHEN d.device_type = 'pos_terminal' AND d.network = 'offline' THEN 'network_offline'
    END AS reason
) r;

-- Stock on hand per store/sku from inventory_changes (sales are not deducted: the POS
-- reports stock by snapshots, and its own movements as adjustments):
--   the standing snapshot is the one with the greatest (occurred_at, event_id);
--   adjustments_since = Σ quantity of adjustments with occurred_at after it (one at its
--                       very time is counted in the snapshot); with no snapshot, Σ of all;
--   on_hand = snapshot_quantity (0 without one) + adjustments_since.
-- Quantities are summed as numeric (each double to 15 significant digits, then exactly),
-- so arrival order and batching cannot change a sum.
CREATE TABLE stock_on_hand (
    tenant_id         text        NOT NULL,
    store_id          text        NOT NULL,
    sku               text        NOT NULL,
    on_hand           numeric     GENERATED ALWAYS AS (coalesce(snapshot_quantity, 0) + adjustments_since) STORED,
    snapshot_quantity numeric,
    snapshot_at       timestamptz,
    snapshot_event_id uuid,
    adjustments_since numeric     NOT NULL,
    changes           bigint      NOT NULL,
    last_change_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, store_id, sku)
);
COMMENT ON TABLE stock_on_hand IS
    'Stock on hand per store/sku: the latest snapshot (by occurred_at, then event_id) plus the adjustments after it. Kept by the compactor in the rows'' transaction.';

-- ---- Alerts ---------------------------------------------------------------------------
-- alert_history: one row per incident, an incident being (tenant_id, store_id,
-- alert_id, started_at) — the rules service gives each incident its own alert_id, and
-- started_at keeps incidents apart for a producer that reuses an id. Columns combine
-- order-independently (see compactor/sql/state_alerts.sql):
--   fired_at, resolved_at  earliest firing / resolved transition (occurred_at)
--   ended_at               when the condition ended, if a resolved transition said so
--   time_to_resolve        resolved_at - started_at (NULL while open)
--   severity               highest of the incident's transitions
--   rule_id, subject, summary  of its first transition (by occurred_at, then event_id)
CREATE TABLE alert_history (
    tenant_id           text        NOT NULL,
    store_id            text        NOT NULL,
    alert_id            text        NOT NULL,
    started_at          timestamptz NOT NULL,
    rule_id             text        NOT NULL,
    subject             text        NOT NULL,
    summary             text        NOT NULL,
    severity            text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    fired_at            timestamptz,
    resolved_at         timestamptz,
    ended_at            timestamptz,
    time_to_resolve     interval    GENERATED ALWAYS AS (resolved_at - started_at) STORED,
    last_transition_at  timestamptz NOT NULL,
    transitions         bigint      NOT NULL,
    first_transition_at timestamptz NOT NULL,
    first_event_id      uuid        NOT NULL,
    PRIMARY KEY (tenant_id, store_id, alert_id, started_at)
);
CREATE INDEX alert_history_started ON alert_history (started_at);
CREATE INDEX alert_history_open ON alert_history (tenant_id, store_id) WHERE resolved_at IS NULL;
COMMENT ON TABLE alert_history IS
    'One row per alert incident with its rule, subject, highest severity, start, first firing and resolution and time_to_resolve. Kept by the compactor in the rows'' transaction.';

-- The incidents without a resolved transition.
CREATE VIEW open_alerts WITH (security_invoker = true) AS
SELECT tenant_id, store_id, alert_id, rule_id, subject, summary, severity, started_at,
       fired_at, last_transition_at, now() - started_at AS open_for
FROM alert_history
WHERE resolved_at IS NULL;

-- ---- Forecasts -----------------------------------------------------------------------
-- forecast_daily: the forecast that stands for each store/sku/day — of the forecasts
-- issued before the day began (00:00 UTC), the latest (greatest issued_at, then
-- event_id). Forecast dates are compared with UTC days, like sales_daily.
CREATE TABLE forecast_daily (
    tenant_id      text             NOT NULL,
    store_id       text             NOT NULL,
    sku            text             NOT NULL,
    day            date             NOT NULL,
    issued_at      timestamptz      NOT NULL,
    event_id       uuid             NOT NULL,
    method         text             NOT NULL,
    interval_level double precision NOT NULL,
    forecast_units double precision NOT NULL,
    forecast_lower double precision NOT NULL,
    forecast_upper double precision NOT NULL,
    PRIMARY KEY (tenant_id, store_id, sku, day)
);
CREATE INDEX forecast_daily_day ON forecast_daily (day);
COMMENT ON TABLE forecast_daily IS
    'The day-ahead demand forecast per store/sku/day: the latest forecast issued before the day began (UTC). Kept by the compactor in the rows'' transaction.';

-- Forecast against what was sold: actual_units = net units of the UTC day (sold -
-- refunded - voided, over every currency) from sales_daily, 0 without sales.
--   error          actual_units - forecast_units (> 0: under-forecast)
--   abs_error      |error|
--   pct_error      abs_error / actual_units (NULL when actual_units = 0)
--   within_interval  forecast_lower <= actual_units <= forecast_upper
--   day_complete   the UTC day is over (before that, actual_units is the running total)
-- Aggregate measures over rows: WAPE = Σ abs_error / Σ actual_units,
-- bias = Σ error / Σ actual_units, MAPE = avg(pct_error), coverage = avg(within_interval::int).
CREATE VIEW forecast_vs_actual WITH (security_invoker = true) AS
SELECT f.tenant_id, f.store_id, f.sku, f.day, b.bucket,
       f.forecast_units, f.forecast_lower, f.forecast_upper, f.interval_level,
       a.actual_units,
       e.error, abs(e.error) AS abs_error,
       abs(e.error) / nullif(a.actual_units::double precision, 0) AS pct_error,
       a.actual_units BETWEEN f.forecast_lower::numeric AND f.forecast_upper::numeric
           AS within_interval,
       b.bucket + interval '1 day' <= now() AS day_complete,
       f.method, f.issued_at, f.event_id AS forecast_event_id
FROM forecast_daily f
CROSS JOIN LATERAL (SELECT f.day::timestamp AT TIME ZONE 'UTC' AS bucket) b
CROSS JOIN LATERAL (
    SELECT coalesce(sum(s.units), 0) AS actual_units
    FROM sales_daily s
    WHERE s.tenant_id = f.tenant_id AND s.store_id = f.store_id AND s.sku = f.sku
      AND s.bucket = b.bucket
) a
CROSS JOIN LATERAL (
    SELECT a.actual_units::double precision - f.forecast_units AS error
) e;

-- ---- Upgrading a read store that holds rows ------------------------------------------
-- Backfill the current state from the stored raw rows, by the same definitions (the
-- relations of alerts and forecasts start empty with their raw tables). As in 0004:
-- compactors of an earlier version must be stopped for the upgrade.
LOCK TABLE pos_heartbeats, sensor_readings, inventory_changes IN SHARE MODE;

INSERT INTO device_last_seen (tenant_id, store_id, device_type, device_id, last_seen_at,
                              last_event_id, app_up, printer, network, software_version)
SELECT DISTINCT ON (tenant_id, store_id, terminal_id)
       tenant_id, store_id, 'pos_terminal', terminal_id, occurred_at, event_id, app_up, printer,
       network, software_version
FROM pos_heartbeats
ORDER BY tenant_id, store_id, terminal_id, occurred_at DESC, event_id DESC;

INSERT INTO device_last_seen (tenant_id, store_id, device_type, device_id, last_seen_at,
                              last_event_id)
SELECT DISTINCT ON (tenant_id, store_id, device_id)
       tenant_id, store_id, 'sensor', device_id, occurred_at, event_id
FROM sensor_readings
ORDER BY tenant_id, store_id, device_id, occurred_at DESC, event_id DESC;

INSERT INTO stock_on_hand (tenant_id, store_id, sku, snapshot_quantity, snapshot_at,
                           snapshot_event_id, adjustments_since, changes, last_change_at)
SELECT k.tenant_id, k.store_id, k.sku, s.quantity::numeric, s.occurred_at, s.event_id,
       coalesce((SELECT sum(a.quantity::numeric) FROM inventory_changes a
                 WHERE a.tenant_id = k.tenant_id AND a.store_id = k.store_id AND a.sku = k.sku
                   AND a.kind = 'adjustment'
                   AND (s.occurred_at IS NULL OR a.occurred_at > s.occurred_at)), 0),
       k.changes, k.last_change_at
FROM (
    SELECT tenant_id, store_id, sku, count(*) AS changes, max(occurred_at) AS last_change_at
    FROM inventory_changes
    GROUP BY tenant_id, store_id, sku
) k
LEFT JOIN LATERAL (
    SELECT x.quantity, x.occurred_at, x.event_id
    FROM inventory_changes x
    WHERE x.tenant_id = k.tenant_id AND x.store_id = k.store_id AND x.sku = k.sku
      AND x.kind = 'snapshot'
    ORDER BY x.occurred_at DESC, x.event_id DESC
    LIMIT 1
) s ON true;

-- ---- Tenant isolation ------------------------------------------------------------------
-- Row-level security (as migration 0006) on every new tenant-scoped table; the views run
-- with their invoker's rights (security_invoker), so these policies apply through them.
-- Analyst roles created before this migration get what `storepulse analysts create`
-- grants now: SELECT on the new tables and views, and on device_status_settings.
DO $$
DECLARE
    rel text;
    analyst text;
BEGIN
    FOREACH rel IN ARRAY ARRAY[
        'alert_transitions', 'demand_forecasts', 'demand_forecast_days', 'notification_outcomes',
        'device_last_seen', 'stock_on_hand', 'alert_history', 'forecast_daily'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', rel);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR SELECT USING (tenant_id = storepulse_analyst_tenant(current_user))',
            rel);
    END LOOP;
    FOR analyst IN SELECT role_name FROM analyst_roles LOOP
        FOREACH rel IN ARRAY ARRAY[
            'alert_transitions', 'demand_forecasts', 'demand_forecast_days',
            'notification_outcomes', 'device_last_seen', 'stock_on_hand', 'alert_history',
            'forecast_daily', 'device_status', 'open_alerts', 'forecast_vs_actual',
            'device_status_settings'
        ] LOOP
            EXECUTE format('GRANT SELECT ON %I TO %I', rel, analyst);
        END LOOP;
    END LOOP;
END $$;
