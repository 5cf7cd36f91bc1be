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

-- Tenant isolation for analysts (as migration 0006), and the grants an analyst role
-- created before this migration would have been given had these relations existed.
DO $$
DECLARE
    rel text;
    analyst text;
BEGIN
    FOREACH rel IN ARRAY ARRAY[
        'alert_transitions', 'demand_forecasts', 'demand_forecast_days', 'notification_outcomes'
    ] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', rel);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I FOR SELECT USING (tenant_id = storepulse_analyst_tenant(current_user))',
            rel);
        FOR analyst IN SELECT role_name FROM analyst_roles LOOP
            EXECUTE format('GRANT SELECT ON %I TO %I', rel, analyst);
        END LOOP;
    END LOOP;
END $$;
