-- Idempotency is scoped to the store: an event is identified by
-- (tenant_id, store_id, event_id), so two tenants or two stores that happen to use
-- the same id are two events. Every event row carries a content hash (SHA-256 of the
-- record with received_at zeroed) so a repeated id with a different payload is
-- recognised and recorded in event_id_conflicts instead of vanishing.
-- Enum texts follow the documented vocabulary (runtime::vocabulary).

ALTER TABLE sale_lines DROP CONSTRAINT sale_lines_event_id_fkey;
ALTER TABLE sale_lines DROP CONSTRAINT sale_lines_pkey;
ALTER TABLE sales DROP CONSTRAINT sales_pkey;
ALTER TABLE sales ADD PRIMARY KEY (tenant_id, store_id, event_id);
ALTER TABLE sale_lines ADD PRIMARY KEY (tenant_id, store_id, event_id, line_no);
ALTER TABLE sale_lines ADD FOREIGN KEY (tenant_id, store_id, event_id)
    REFERENCES sales (tenant_id, store_id, event_id) ON DELETE CASCADE;

ALTER TABLE inventory_changes DROP CONSTRAINT inventory_changes_pkey;
ALTER TABLE inventory_changes ADD PRIMARY KEY (tenant_id, store_id, event_id);
ALTER TABLE pos_heartbeats DROP CONSTRAINT pos_heartbeats_pkey;
ALTER TABLE pos_heartbeats ADD PRIMARY KEY (tenant_id, store_id, event_id);
ALTER TABLE sensor_readings DROP CONSTRAINT sensor_readings_pkey;
ALTER TABLE sensor_readings ADD PRIMARY KEY (tenant_id, store_id, event_id);
ALTER TABLE rejected_events DROP CONSTRAINT rejected_events_pkey;
ALTER TABLE rejected_events ADD PRIMARY KEY (tenant_id, store_id, event_id);

ALTER TABLE sales ADD COLUMN content_hash bytea;
ALTER TABLE inventory_changes ADD COLUMN content_hash bytea;
ALTER TABLE pos_heartbeats ADD COLUMN content_hash bytea;
ALTER TABLE sensor_readings ADD COLUMN content_hash bytea;
ALTER TABLE rejected_events ADD COLUMN content_hash bytea;
ALTER TABLE rejected_events ADD COLUMN original_length bigint;
ALTER TABLE rejected_events ADD COLUMN original_sha256 text;

CREATE TABLE event_id_conflicts (
    topic             text        NOT NULL,
    partition         integer     NOT NULL,
    "offset"          bigint      NOT NULL,
    tenant_id         text        NOT NULL,
    store_id          text        NOT NULL,
    event_id          uuid        NOT NULL,
    relation          text        NOT NULL,
    stored_hash       bytea,
    conflicting_hash  bytea       NOT NULL,
    seen_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
COMMENT ON TABLE event_id_conflicts IS
    'Records that reused a stored event id with a different payload: not applied (the first one stands), kept here with their coordinates so the source can be found and fixed.';

UPDATE pos_heartbeats SET printer = 'paper_low' WHERE printer = 'paperlow';
UPDATE pos_heartbeats SET printer = 'paper_out' WHERE printer = 'paperout';
UPDATE inventory_changes SET reason = 'customer_return' WHERE reason = 'customerreturn';
UPDATE inventory_changes SET reason = 'count_correction' WHERE reason = 'countcorrection';
UPDATE sensor_readings SET unit = 'open_closed' WHERE unit = 'openclosed';
UPDATE sensor_readings SET unit = 'on_off' WHERE unit = 'onoff';

ALTER TABLE pos_heartbeats ADD CONSTRAINT pos_heartbeats_printer_check
    CHECK (printer IN ('ok', 'paper_low', 'paper_out', 'offline', 'error'));
ALTER TABLE pos_heartbeats ADD CONSTRAINT pos_heartbeats_network_check
    CHECK (network IN ('online', 'degraded', 'offline'));
ALTER TABLE inventory_changes ADD CONSTRAINT inventory_changes_reason_check
    CHECK (reason IN ('delivery', 'shrink', 'customer_return', 'count_correction', 'transfer'));
ALTER TABLE sensor_readings ADD CONSTRAINT sensor_readings_kind_check
    CHECK (kind IN ('temperature', 'humidity', 'door', 'power'));
ALTER TABLE sensor_readings ADD CONSTRAINT sensor_readings_unit_check
    CHECK (unit IN ('celsius', 'percent', 'open_closed', 'on_off'));
