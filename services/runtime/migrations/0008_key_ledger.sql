-- The idempotency key moves out of the raw tables into one key ledger, so the raw
-- tables can be partitioned by time (plain PostgreSQL) or be hypertables
-- (TimescaleDB): a unique index on a partitioned table must include the partitioning
-- column, but the key is (tenant_id, store_id, event_id) whatever the time, and an id
-- reused with another payload (another occurred_at included) must still be found
-- (decision 0009).
--
-- event_keys holds one row per stored raw event: its relation, scoped key, event time
-- and content hash. The compactor inserts the key first (ON CONFLICT DO NOTHING) and
-- the raw row only for keys it inserted, in the same statement. A key leaves the ledger
-- only after the raw rows of its time range were removed by retention (the maintenance
-- task prunes keys older than the oldest partition left), so a key is never missing
-- while its row exists.
--
-- Two columns are stored on raw rows so the analyst relations can be computed from
-- one table each (continuous aggregates on TimescaleDB; the same definitions on plain):
--   sale_lines.kind, sale_lines.currency   the line's sale's
--   sensor_readings.out_of_range           value outside [low, high] of sensor_limits as
--                                          they were when the reading was written (the
--                                          row for (kind, appliance), else (kind, '*');
--                                          no row: false) — what sensor_stats_* count.

CREATE TABLE event_keys (
    relation     text        NOT NULL,
    tenant_id    text        NOT NULL,
    store_id     text        NOT NULL,
    event_id     uuid        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    content_hash bytea,
    PRIMARY KEY (relation, tenant_id, store_id, event_id)
);
-- Keys arrive roughly in event-time order: a BRIN index finds a retention cutoff's
-- keys at almost no write cost.
CREATE INDEX event_keys_occurred_at ON event_keys USING brin (occurred_at);
COMMENT ON TABLE event_keys IS
    'Idempotency ledger: one row per stored raw event (relation, tenant_id, store_id, event_id) with its occurred_at and content hash. Written by the compactor with the raw row; pruned only after retention removed the rows of its time range.';

LOCK TABLE sales, sale_lines, inventory_changes, pos_heartbeats, sensor_readings,
           rejected_events IN SHARE MODE;

INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
SELECT 'sales', tenant_id, store_id, event_id, occurred_at, content_hash FROM sales
UNION ALL
SELECT 'inventory_changes', tenant_id, store_id, event_id, occurred_at, content_hash
FROM inventory_changes
UNION ALL
SELECT 'pos_heartbeats', tenant_id, store_id, event_id, occurred_at, content_hash
FROM pos_heartbeats
UNION ALL
SELECT 'sensor_readings', tenant_id, store_id, event_id, occurred_at, content_hash
FROM sensor_readings
UNION ALL
SELECT 'rejected_events', tenant_id, store_id, event_id, occurred_at, content_hash
FROM rejected_events;

ALTER TABLE sale_lines DROP CONSTRAINT sale_lines_tenant_id_store_id_event_id_fkey;
ALTER TABLE sale_lines DROP CONSTRAINT sale_lines_pkey;
ALTER TABLE sales DROP CONSTRAINT sales_pkey;
ALTER TABLE inventory_changes DROP CONSTRAINT inventory_changes_pkey;
ALTER TABLE pos_heartbeats DROP CONSTRAINT pos_heartbeats_pkey;
ALTER TABLE sensor_readings DROP CONSTRAINT sensor_readings_pkey;
ALTER TABLE rejected_events DROP CONSTRAINT rejected_events_pkey;

ALTER TABLE sale_lines ADD COLUMN kind text, ADD COLUMN currency text;
UPDATE sale_lines l SET kind = s.kind, currency = s.currency
FROM sales s
WHERE s.tenant_id = l.tenant_id AND s.store_id = l.store_id AND s.event_id = l.event_id;
ALTER TABLE sale_lines
    ALTER COLUMN kind SET NOT NULL,
    ALTER COLUMN currency SET NOT NULL,
    ADD CONSTRAINT sale_lines_kind_check CHECK (kind IN ('sale', 'refund', 'void'));

ALTER TABLE sensor_readings ADD COLUMN out_of_range boolean;
UPDATE sensor_readings r SET out_of_range = coalesce((
    SELECT r.value < l.low OR r.value > l.high
    FROM sensor_limits l
    WHERE l.kind = r.kind AND l.appliance IN (r.appliance, '*')
    ORDER BY l.appliance = '*'
    LIMIT 1
), false);
ALTER TABLE sensor_readings ALTER COLUMN out_of_range SET NOT NULL;
