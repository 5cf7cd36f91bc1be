-- The forecaster's own state (schema forecaster): daily demand per store/sku, the
-- latest stock level, the series' publication bookkeeping, the event-key ledger and
-- the consumed offsets. Written with the offsets in one transaction per batch.

CREATE TABLE IF NOT EXISTS forecaster.offsets (
    consumer_group text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Event ids applied, per store: a retried event (same id, new offset) counts once.
CREATE TABLE IF NOT EXISTS forecaster.event_keys (
    tenant_id text NOT NULL,
    store_id text NOT NULL,
    event_id text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, store_id, event_id)
);
CREATE INDEX IF NOT EXISTS event_keys_seen_at ON forecaster.event_keys (seen_at);

-- Net units (sold - refunded - voided) per store/sku and day in the store's time zone.
CREATE TABLE IF NOT EXISTS forecaster.daily_demand (
    tenant_id text NOT NULL,
    store_id text NOT NULL,
    sku text NOT NULL,
    day date NOT NULL,
    units numeric NOT NULL,
    sold numeric NOT NULL,
    lines bigint NOT NULL,
    PRIMARY KEY (tenant_id, store_id, sku, day)
);

-- One row per store/sku seen on pos.sales.v1 or pos.inventory.v1.
CREATE TABLE IF NOT EXISTS forecaster.series (
    tenant_id text NOT NULL,
    store_id text NOT NULL,
    sku text NOT NULL,
    first_day date,
    -- sale lines applied since the last published forecast
    lines_since_forecast bigint NOT NULL DEFAULT 0,
    stock_changed boolean NOT NULL DEFAULT false,
    last_forecast_at timestamptz,
    method text,
    claimed_until timestamptz,
    PRIMARY KEY (tenant_id, store_id, sku)
);
CREATE INDEX IF NOT EXISTS series_last_forecast ON forecaster.series (last_forecast_at NULLS FIRST);

-- Stock on hand as the POS reports it: the latest snapshot plus the adjustments after it.
CREATE TABLE IF NOT EXISTS forecaster.stock (
    tenant_id text NOT NULL,
    store_id text NOT NULL,
    sku text NOT NULL,
    snapshot_quantity double precision,
    snapshot_at timestamptz,
    adjustments_since double precision NOT NULL DEFAULT 0,
    last_change_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, store_id, sku)
);
