-- Raw event tables: one row per event, keyed by the event's idempotency key.
-- Written only by the compactor, in the same transaction as its consumer offsets.

CREATE TABLE consumer_offsets (
    consumer_group text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    next_offset    bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
COMMENT ON TABLE consumer_offsets IS
    'Next Kafka offset to apply per group/topic/partition; committed with the rows it covers.';

CREATE TABLE sales (
    event_id                uuid        PRIMARY KEY,
    tenant_id               text        NOT NULL,
    store_id                text        NOT NULL,
    occurred_at             timestamptz NOT NULL,
    received_at             timestamptz NOT NULL,
    source                  text        NOT NULL,
    kind                    text        NOT NULL CHECK (kind IN ('sale', 'refund', 'void')),
    transaction_id          text        NOT NULL,
    terminal_id             text        NOT NULL,
    currency                text        NOT NULL,
    total_minor             bigint      NOT NULL,
    original_transaction_id text
);
CREATE INDEX sales_store_time ON sales (tenant_id, store_id, occurred_at);

CREATE TABLE sale_lines (
    event_id         uuid             NOT NULL REFERENCES sales (event_id) ON DELETE CASCADE,
    line_no          integer          NOT NULL,
    tenant_id        text             NOT NULL,
    store_id         text             NOT NULL,
    occurred_at      timestamptz      NOT NULL,
    sku              text             NOT NULL,
    quantity         double precision NOT NULL,
    unit_price_minor bigint           NOT NULL,
    PRIMARY KEY (event_id, line_no)
);
CREATE INDEX sale_lines_store_sku_time ON sale_lines (tenant_id, store_id, sku, occurred_at);

CREATE TABLE inventory_changes (
    event_id    uuid             PRIMARY KEY,
    tenant_id   text             NOT NULL,
    store_id    text             NOT NULL,
    occurred_at timestamptz      NOT NULL,
    received_at timestamptz      NOT NULL,
    source      text             NOT NULL,
    kind        text             NOT NULL CHECK (kind IN ('snapshot', 'adjustment')),
    sku         text             NOT NULL,
    quantity    double precision NOT NULL,
    reason      text
);
CREATE INDEX inventory_store_sku_time ON inventory_changes (tenant_id, store_id, sku, occurred_at);

CREATE TABLE pos_heartbeats (
    event_id         uuid        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    store_id         text        NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    source           text        NOT NULL,
    terminal_id      text        NOT NULL,
    app_up           boolean     NOT NULL,
    printer          text        NOT NULL,
    network          text        NOT NULL,
    software_version text
);
CREATE INDEX pos_heartbeats_store_time ON pos_heartbeats (tenant_id, store_id, terminal_id, occurred_at);

CREATE TABLE sensor_readings (
    event_id    uuid             PRIMARY KEY,
    tenant_id   text             NOT NULL,
    store_id    text             NOT NULL,
    occurred_at timestamptz      NOT NULL,
    received_at timestamptz      NOT NULL,
    source      text             NOT NULL,
    device_id   text             NOT NULL,
    kind        text             NOT NULL,
    value       double precision NOT NULL,
    unit        text             NOT NULL,
    appliance   text
);
CREATE INDEX sensor_readings_store_device_time ON sensor_readings (tenant_id, store_id, device_id, occurred_at);

CREATE TABLE rejected_events (
    event_id          uuid        PRIMARY KEY,
    tenant_id         text        NOT NULL,
    store_id          text        NOT NULL,
    occurred_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL,
    source            text        NOT NULL,
    reason            text        NOT NULL,
    field             text,
    original          bytea       NOT NULL,
    original_event_id text,
    source_topic      text,
    source_partition  integer,
    source_offset     bigint
);
CREATE INDEX rejected_events_time ON rejected_events (received_at);
