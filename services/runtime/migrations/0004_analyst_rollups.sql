-- Analyst relations on plain PostgreSQL: rollups of the raw tables, maintained by the
-- compactor in the same transaction as the raw rows they count (decision 0008).
-- Every increment comes only from rows inserted by that transaction, so each rollup
-- always equals a recount (GROUP BY) of the raw tables. On TimescaleDB the same names
-- and columns will be continuous aggregates (or views over them).
--
-- Buckets are UTC and taken from the event's occurred_at (event time, not arrival):
--   hour   date_trunc('hour', occurred_at, 'UTC')
--   day    date_trunc('day',  occurred_at, 'UTC')
--   5 min  date_bin('5 minutes', occurred_at, '2000-01-01 00:00:00+00')
-- A late event increments its own (old) bucket; nothing is ever recomputed.
--
-- Exactness of sums: money is bigint minor units; quantities and sensor values are
-- summed as numeric (quantity::numeric, value::numeric: each double converted to
-- 15 significant digits, then added exactly), so a sum does not depend on the
-- order or batching in which rows arrived. min/max only ever widen (raw rows are
-- never updated or deleted by the compactor).

-- Sales per tenant/store/sku/currency per hour and per day, from sale_lines joined to
-- their sales row. Per line, amount_minor = round(quantity * unit_price_minor) in
-- numeric, half away from zero (so per-sku sums may differ from sales.total_minor,
-- which rounds once per transaction, by at most 1 minor unit per line).
--   kind 'sale'   → units_sold,     sold_minor,     transactions (distinct sale events)
--   kind 'refund' → units_refunded, refunded_minor, refunds      (distinct refund events)
--   kind 'void'   → units_voided,   voided_minor,   voids        (distinct void events)
--   units         = units_sold - units_refunded - units_voided        (net)
--   revenue_minor = sold_minor - refunded_minor - voided_minor        (net)
-- "Distinct events" counts an event once per sku even if it has several lines of it.
CREATE TABLE sales_hourly (
    tenant_id      text        NOT NULL,
    store_id       text        NOT NULL,
    sku            text        NOT NULL,
    currency       text        NOT NULL,
    bucket         timestamptz NOT NULL,
    units_sold     numeric     NOT NULL DEFAULT 0,
    units_refunded numeric     NOT NULL DEFAULT 0,
    units_voided   numeric     NOT NULL DEFAULT 0,
    sold_minor     bigint      NOT NULL DEFAULT 0,
    refunded_minor bigint      NOT NULL DEFAULT 0,
    voided_minor   bigint      NOT NULL DEFAULT 0,
    transactions   bigint      NOT NULL DEFAULT 0,
    refunds        bigint      NOT NULL DEFAULT 0,
    voids          bigint      NOT NULL DEFAULT 0,
    units          numeric     GENERATED ALWAYS AS (units_sold - units_refunded - units_voided) STORED,
    revenue_minor  bigint      GENERATED ALWAYS AS (sold_minor - refunded_minor - voided_minor) STORED,
    PRIMARY KEY (tenant_id, store_id, sku, currency, bucket)
);
CREATE INDEX sales_hourly_bucket ON sales_hourly (bucket);
COMMENT ON TABLE sales_hourly IS
    'Sales per tenant/store/sku/currency per UTC hour of occurred_at; units and revenue_minor are net of refunds and voids. Maintained by the compactor in the rows'' transaction; equals a recount of sale_lines ⋈ sales.';

CREATE TABLE sales_daily (LIKE sales_hourly INCLUDING ALL);
COMMENT ON TABLE sales_daily IS
    'Sales per tenant/store/sku/currency per UTC day of occurred_at; same columns and semantics as sales_hourly.';

-- Sensor statistics per tenant/store/device/kind per 5 minutes and per hour.
--   readings      count of readings
--   value_min/max smallest/largest value
--   value_sum     Σ value::numeric (exact; see above); value_avg = value_sum / readings
--   out_of_range  count of readings with value < low or value > high of the device's
--                 limits in sensor_limits at the time the reading was written (the
--                 row for (kind, appliance), else (kind, '*'); no row: never out of
--                 range). Readings, not seconds: a count does not depend on arrival
--                 order; time out of range in seconds is left to a later release.
CREATE TABLE sensor_limits (
    kind      text             NOT NULL CHECK (kind IN ('temperature', 'humidity', 'door', 'power')),
    appliance text             NOT NULL DEFAULT '*',
    low       double precision NOT NULL,
    high      double precision NOT NULL CHECK (low <= high),
    PRIMARY KEY (kind, appliance)
);
COMMENT ON TABLE sensor_limits IS
    'Acceptable value range [low, high] per sensor kind and appliance (''*'' = any other appliance). Read by the compactor when it counts out_of_range; a change applies to readings written afterwards.';
INSERT INTO sensor_limits (kind, appliance, low, high) VALUES
    ('temperature', 'fridge', 0, 8),
    ('temperature', 'freezer', -30, -15),
    ('power', '*', 1, 1);

CREATE TABLE sensor_stats_5m (
    tenant_id    text             NOT NULL,
    store_id     text             NOT NULL,
    device_id    text             NOT NULL,
    kind         text             NOT NULL,
    bucket       timestamptz      NOT NULL,
    readings     bigint           NOT NULL,
    value_min    double precision NOT NULL,
    value_max    double precision NOT NULL,
    value_sum    numeric          NOT NULL,
    out_of_range bigint           NOT NULL,
    value_avg    double precision GENERATED ALWAYS AS ((value_sum / readings)::double precision) STORED,
    PRIMARY KEY (tenant_id, store_id, device_id, kind, bucket)
);
CREATE INDEX sensor_stats_5m_bucket ON sensor_stats_5m (bucket);
COMMENT ON TABLE sensor_stats_5m IS
    'Sensor readings per tenant/store/device/kind per 5 UTC minutes of occurred_at: count, min, max, exact sum, avg, readings out of range. Maintained by the compactor in the rows'' transaction.';

CREATE TABLE sensor_stats_hourly (LIKE sensor_stats_5m INCLUDING ALL);
COMMENT ON TABLE sensor_stats_hourly IS
    'Sensor readings per tenant/store/device/kind per UTC hour of occurred_at; same columns and semantics as sensor_stats_5m.';

-- Backfill from the raw rows stored before this migration (the same definitions as the
-- compactor's increments). The raw tables are locked against writes until this
-- migration commits, so the rollups start equal to a recount. Compactors of an earlier
-- version must be stopped for the upgrade: rows they inserted after it would be missing
-- from the rollups (the upgraded compactor applies the migration at start).
LOCK TABLE sales, sale_lines, sensor_readings IN SHARE MODE;

INSERT INTO sales_hourly (tenant_id, store_id, sku, currency, bucket,
                          units_sold, units_refunded, units_voided,
                          sold_minor, refunded_minor, voided_minor,
                          transactions, refunds, voids)
SELECT l.tenant_id, l.store_id, l.sku, s.currency, date_trunc('hour', l.occurred_at, 'UTC'),
       coalesce(sum(l.quantity::numeric) FILTER (WHERE s.kind = 'sale'), 0),
       coalesce(sum(l.quantity::numeric) FILTER (WHERE s.kind = 'refund'), 0),
       coalesce(sum(l.quantity::numeric) FILTER (WHERE s.kind = 'void'), 0),
       coalesce(sum(round(l.quantity::numeric * l.unit_price_minor)) FILTER (WHERE s.kind = 'sale'), 0),
       coalesce(sum(round(l.quantity::numeric * l.unit_price_minor)) FILTER (WHERE s.kind = 'refund'), 0),
       coalesce(sum(round(l.quantity::numeric * l.unit_price_minor)) FILTER (WHERE s.kind = 'void'), 0),
       count(DISTINCT l.event_id) FILTER (WHERE s.kind = 'sale'),
       count(DISTINCT l.event_id) FILTER (WHERE s.kind = 'refund'),
       count(DISTINCT l.event_id) FILTER (WHERE s.kind = 'void')
FROM sale_lines l
JOIN sales s USING (tenant_id, store_id, event_id)
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO sales_daily (tenant_id, store_id, sku, currency, bucket,
                         units_sold, units_refunded, units_voided,
                         sold_minor, refunded_minor, voided_minor,
                         transactions, refunds, voids)
SELECT tenant_id, store_id, sku, currency, date_trunc('day', bucket, 'UTC'),
       sum(units_sold), sum(units_refunded), sum(units_voided),
       sum(sold_minor), sum(refunded_minor), sum(voided_minor),
       sum(transactions), sum(refunds), sum(voids)
FROM sales_hourly
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO sensor_stats_5m (tenant_id, store_id, device_id, kind, bucket,
                             readings, value_min, value_max, value_sum, out_of_range)
SELECT r.tenant_id, r.store_id, r.device_id, r.kind,
       date_bin('5 minutes', r.occurred_at, timestamptz '2000-01-01 00:00:00+00'),
       count(*), min(r.value), max(r.value), sum(r.value::numeric),
       count(*) FILTER (WHERE r.value < l.low OR r.value > l.high)
FROM sensor_readings r
LEFT JOIN LATERAL (
    SELECT l.low, l.high
    FROM sensor_limits l
    WHERE l.kind = r.kind AND l.appliance IN (r.appliance, '*')
    ORDER BY l.appliance = '*'
    LIMIT 1
) l ON true
GROUP BY 1, 2, 3, 4, 5;

INSERT INTO sensor_stats_hourly (tenant_id, store_id, device_id, kind, bucket,
                                 readings, value_min, value_max, value_sum, out_of_range)
SELECT tenant_id, store_id, device_id, kind, date_trunc('hour', bucket, 'UTC'),
       sum(readings), min(value_min), max(value_max), sum(value_sum), sum(out_of_range)
FROM sensor_stats_5m
GROUP BY 1, 2, 3, 4, 5;
