-- TimescaleDB flavour: the analyst relations of migrations 0004 and 0005 become
-- continuous aggregates with real-time aggregation, under the same names and columns
-- (decision 0011). The compactor no longer maintains rollups on this flavour.
--
-- Each aggregate is a continuous aggregate in schema storepulse_aggregates (computed
-- from one raw hypertable: sale_lines carries its sale's kind and currency,
-- sensor_readings its out_of_range flag), and public.<name> is a view over it that
-- adds the derived columns (units, revenue_minor, value_avg, minutes_seen,
-- minutes_up, uptime_ratio) and filters rows by tenant for analyst roles: a
-- continuous aggregate cannot carry row-level security, and its own view reads the
-- raw hypertables with its owner's rights. The filter is evaluated once per query:
-- the read store's owner (and superusers) see every tenant, an analyst role only its
-- own (storepulse_analyst_tenant), any other role nothing.
--
-- Buckets: time_bucket('1 hour' | '1 day', occurred_at) is UTC like
-- date_trunc(..., 'UTC'); time_bucket('5 minutes', ...) has the boundaries of
-- date_bin('5 minutes', ..., '2000-01-01Z').
--
-- Freshness: buckets newer than the last refresh are computed from the raw rows at
-- query time (materialized_only = false); materialized buckets are refreshed by a
-- refresh policy over the last 30 days (ingest accepts events at most 30 days old)
-- every minute (5 minutes for daily buckets), so a late event in an already
-- materialized bucket shows within that interval. Materialized chunks are compressed
-- after 45 days. Retention is set by the compactor from its configuration.

LOCK TABLE sale_lines, sensor_readings, pos_heartbeats IN SHARE MODE;

-- Views over the rollup tables (e.g. forecasts against sales_daily) are put back over
-- the new relations at the end.
SELECT storepulse_stash_views(ARRAY['sales_hourly', 'sales_daily', 'sensor_stats_5m',
                                    'sensor_stats_hourly', 'pos_uptime_daily']::regclass[]);
DROP TABLE sales_hourly, sales_daily, sensor_stats_5m, sensor_stats_hourly, pos_uptime_daily
    CASCADE;

CREATE SCHEMA storepulse_aggregates;
COMMENT ON SCHEMA storepulse_aggregates IS
    'Continuous aggregates behind the analyst views of the same names in public; not for analysts (no tenant filter here).';

-- Whether the querying role reads every tenant: the read store's owner (the owner of
-- analyst_roles), its members, and superusers.
CREATE FUNCTION storepulse_reads_every_tenant() RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog, public
AS $$
    SELECT pg_has_role(current_user, c.relowner, 'USAGE')
    FROM pg_class c
    WHERE c.oid = 'public.analyst_roles'::regclass
$$;

CREATE MATERIALIZED VIEW storepulse_aggregates.sales_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id, store_id, sku, currency, time_bucket('1 hour', occurred_at) AS bucket,
       coalesce(sum(quantity::numeric) FILTER (WHERE kind = 'sale'), 0) AS units_sold,
       coalesce(sum(quantity::numeric) FILTER (WHERE kind = 'refund'), 0) AS units_refunded,
       coalesce(sum(quantity::numeric) FILTER (WHERE kind = 'void'), 0) AS units_voided,
       coalesce(sum(round(quantity::numeric * unit_price_minor)) FILTER (WHERE kind = 'sale'), 0)::bigint AS sold_minor,
       coalesce(sum(round(quantity::numeric * unit_price_minor)) FILTER (WHERE kind = 'refund'), 0)::bigint AS refunded_minor,
       coalesce(sum(round(quantity::numeric * unit_price_minor)) FILTER (WHERE kind = 'void'), 0)::bigint AS voided_minor,
       count(DISTINCT event_id) FILTER (WHERE kind = 'sale') AS transactions,
       count(DISTINCT event_id) FILTER (WHERE kind = 'refund') AS refunds,
       count(DISTINCT event_id) FILTER (WHERE kind = 'void') AS voids
FROM public.sale_lines
GROUP BY tenant_id, store_id, sku, currency, time_bucket('1 hour', occurred_at)
WITH NO DATA;

CREATE MATERIALIZED VIEW storepulse_aggregates.sales_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id, store_id, sku, currency, time_bucket('1 day', occurred_at) AS bucket,
       coalesce(sum(quantity::numeric) FILTER (WHERE kind = 'sale'), 0) AS units_sold,
       coalesce(sum(quantity::numeric) FILTER (WHERE kind = 'refund'), 0) AS units_refunded,
       coalesce(sum(quantity::numeric) FILTER (WHERE kind = 'void'), 0) AS units_voided,
       coalesce(sum(round(quantity::numeric * unit_price_minor)) FILTER (WHERE kind = 'sale'), 0)::bigint AS sold_minor,
       coalesce(sum(round(quantity::numeric * unit_price_minor)) FILTER (WHERE kind = 'refund'), 0)::bigint AS refunded_minor,
       coalesce(sum(round(quantity::numeric * unit_price_minor)) FILTER (WHERE kind = 'void'), 0)::bigint AS voided_minor,
       count(DISTINCT event_id) FILTER (WHERE kind = 'sale') AS transactions,
       count(DISTINCT event_id) FILTER (WHERE kind = 'refund') AS refunds,
       count(DISTINCT event_id) FILTER (WHERE kind = 'void') AS voids
FROM public.sale_lines
GROUP BY tenant_id, store_id, sku, currency, time_bucket('1 day', occurred_at)
WITH NO DATA;

CREATE MATERIALIZED VIEW storepulse_aggregates.sensor_stats_5m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id, store_id, device_id, kind, time_bucket('5 minutes', occurred_at) AS bucket,
       count(*) AS readings,
       min(value) AS value_min,
       max(value) AS value_max,
       sum(value::numeric) AS value_sum,
       count(*) FILTER (WHERE out_of_range) AS out_of_range
FROM public.sensor_readings
GROUP BY tenant_id, store_id, device_id, kind, time_bucket('5 minutes', occurred_at)
WITH NO DATA;

CREATE MATERIALIZED VIEW storepulse_aggregates.sensor_stats_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id, store_id, device_id, kind, time_bucket('1 hour', occurred_at) AS bucket,
       count(*) AS readings,
       min(value) AS value_min,
       max(value) AS value_max,
       sum(value::numeric) AS value_sum,
       count(*) FILTER (WHERE out_of_range) AS out_of_range
FROM public.sensor_readings
GROUP BY tenant_id, store_id, device_id, kind, time_bucket('1 hour', occurred_at)
WITH NO DATA;

-- Minute m of a day is [m, m+1) minutes after 00:00 UTC; masks combine with bit_or.
CREATE MATERIALIZED VIEW storepulse_aggregates.pos_uptime_daily
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id, store_id, terminal_id, time_bucket('1 day', occurred_at) AS bucket,
       count(*) AS heartbeats,
       count(*) FILTER (WHERE app_up) AS heartbeats_app_up,
       count(*) FILTER (WHERE printer = 'ok') AS heartbeats_printer_ok,
       count(*) FILTER (WHERE network = 'online') AS heartbeats_network_online,
       bit_or(set_bit(repeat('0', 1440)::bit(1440),
                      floor(extract(epoch FROM occurred_at - time_bucket('1 day', occurred_at)) / 60)::int,
                      1)) AS seen_minutes,
       coalesce(bit_or(set_bit(repeat('0', 1440)::bit(1440),
                               floor(extract(epoch FROM occurred_at - time_bucket('1 day', occurred_at)) / 60)::int,
                               1)) FILTER (WHERE app_up),
                repeat('0', 1440)::bit(1440)) AS up_minutes
FROM public.pos_heartbeats
GROUP BY tenant_id, store_id, terminal_id, time_bucket('1 day', occurred_at)
WITH NO DATA;

-- The analyst relations: same names, columns and column order as the plain flavour's
-- tables.
CREATE VIEW sales_hourly WITH (security_barrier) AS
SELECT a.tenant_id, a.store_id, a.sku, a.currency, a.bucket,
       a.units_sold, a.units_refunded, a.units_voided,
       a.sold_minor, a.refunded_minor, a.voided_minor,
       a.transactions, a.refunds, a.voids,
       a.units_sold - a.units_refunded - a.units_voided AS units,
       a.sold_minor - a.refunded_minor - a.voided_minor AS revenue_minor
FROM storepulse_aggregates.sales_hourly a
WHERE (SELECT storepulse_reads_every_tenant())
   OR a.tenant_id = (SELECT storepulse_analyst_tenant(current_user));
COMMENT ON VIEW sales_hourly IS
    'Sales per tenant/store/sku/currency per UTC hour of occurred_at; units and revenue_minor are net of refunds and voids. A continuous aggregate of sale_lines (real-time).';

CREATE VIEW sales_daily WITH (security_barrier) AS
SELECT a.tenant_id, a.store_id, a.sku, a.currency, a.bucket,
       a.units_sold, a.units_refunded, a.units_voided,
       a.sold_minor, a.refunded_minor, a.voided_minor,
       a.transactions, a.refunds, a.voids,
       a.units_sold - a.units_refunded - a.units_voided AS units,
       a.sold_minor - a.refunded_minor - a.voided_minor AS revenue_minor
FROM storepulse_aggregates.sales_daily a
WHERE (SELECT storepulse_reads_every_tenant())
   OR a.tenant_id = (SELECT storepulse_analyst_tenant(current_user));
COMMENT ON VIEW sales_daily IS
    'Sales per tenant/store/sku/currency per UTC day of occurred_at; same columns and semantics as sales_hourly.';

CREATE VIEW sensor_stats_5m WITH (security_barrier) AS
SELECT a.tenant_id, a.store_id, a.device_id, a.kind, a.bucket,
       a.readings, a.value_min, a.value_max, a.value_sum, a.out_of_range,
       (a.value_sum / a.readings)::double precision AS value_avg
FROM storepulse_aggregates.sensor_stats_5m a
WHERE (SELECT storepulse_reads_every_tenant())
   OR a.tenant_id = (SELECT storepulse_analyst_tenant(current_user));
COMMENT ON VIEW sensor_stats_5m IS
    'Sensor readings per tenant/store/device/kind per 5 UTC minutes of occurred_at: count, min, max, exact sum, avg, readings out of range. A continuous aggregate of sensor_readings (real-time).';

CREATE VIEW sensor_stats_hourly WITH (security_barrier) AS
SELECT a.tenant_id, a.store_id, a.device_id, a.kind, a.bucket,
       a.readings, a.value_min, a.value_max, a.value_sum, a.out_of_range,
       (a.value_sum / a.readings)::double precision AS value_avg
FROM storepulse_aggregates.sensor_stats_hourly a
WHERE (SELECT storepulse_reads_every_tenant())
   OR a.tenant_id = (SELECT storepulse_analyst_tenant(current_user));
COMMENT ON VIEW sensor_stats_hourly IS
    'Sensor readings per tenant/store/device/kind per UTC hour of occurred_at; same columns and semantics as sensor_stats_5m.';

CREATE VIEW pos_uptime_daily WITH (security_barrier) AS
SELECT a.tenant_id, a.store_id, a.terminal_id, a.bucket,
       a.heartbeats, a.heartbeats_app_up, a.heartbeats_printer_ok, a.heartbeats_network_online,
       a.seen_minutes::bit(1440) AS seen_minutes,
       a.up_minutes::bit(1440) AS up_minutes,
       bit_count(a.seen_minutes) AS minutes_seen,
       bit_count(a.up_minutes) AS minutes_up,
       bit_count(a.up_minutes)::double precision / 1440 AS uptime_ratio
FROM storepulse_aggregates.pos_uptime_daily a
WHERE (SELECT storepulse_reads_every_tenant())
   OR a.tenant_id = (SELECT storepulse_analyst_tenant(current_user));
COMMENT ON VIEW pos_uptime_daily IS
    'POS terminal uptime per tenant/store/terminal per UTC day of occurred_at: heartbeat counts and per-minute masks (seen, app up); uptime_ratio = minutes with an app-up heartbeat / 1440. A continuous aggregate of pos_heartbeats (real-time).';

-- Policies: refresh over the last 30 days; compress materialized chunks after 45 days.
SELECT add_continuous_aggregate_policy('storepulse_aggregates.sales_hourly',
    start_offset => interval '30 days', end_offset => interval '1 hour',
    schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('storepulse_aggregates.sales_daily',
    start_offset => interval '30 days', end_offset => interval '1 day',
    schedule_interval => interval '5 minutes');
SELECT add_continuous_aggregate_policy('storepulse_aggregates.sensor_stats_5m',
    start_offset => interval '30 days', end_offset => interval '5 minutes',
    schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('storepulse_aggregates.sensor_stats_hourly',
    start_offset => interval '30 days', end_offset => interval '1 hour',
    schedule_interval => interval '1 minute');
SELECT add_continuous_aggregate_policy('storepulse_aggregates.pos_uptime_daily',
    start_offset => interval '30 days', end_offset => interval '1 day',
    schedule_interval => interval '5 minutes');

DO $$
DECLARE
    agg     text;
    analyst text;
BEGIN
    FOREACH agg IN ARRAY ARRAY['sales_hourly', 'sales_daily', 'sensor_stats_5m',
                               'sensor_stats_hourly', 'pos_uptime_daily'] LOOP
        EXECUTE format('ALTER MATERIALIZED VIEW storepulse_aggregates.%I SET (timescaledb.compress = true)', agg);
        PERFORM add_compression_policy(format('storepulse_aggregates.%I', agg)::regclass,
                                       compress_after => interval '45 days');
        FOR analyst IN SELECT role_name FROM analyst_roles LOOP
            EXECUTE format('GRANT SELECT ON public.%I TO %I', agg, analyst);
        END LOOP;
    END LOOP;
END
$$;

SELECT storepulse_restore_views();

-- A store upgraded with raw rows: materialize them once after this migration
-- (db::migrate runs what is listed here, outside a transaction, and empties it).
CREATE TABLE aggregate_backfill (
    aggregate  text     PRIMARY KEY,
    end_offset interval NOT NULL
);
INSERT INTO aggregate_backfill (aggregate, end_offset)
SELECT a.aggregate, a.end_offset
FROM (VALUES ('sales_hourly', interval '1 hour', 'sale_lines'),
             ('sales_daily', interval '1 day', 'sale_lines'),
             ('sensor_stats_5m', interval '5 minutes', 'sensor_readings'),
             ('sensor_stats_hourly', interval '1 hour', 'sensor_readings'),
             ('pos_uptime_daily', interval '1 day', 'pos_heartbeats')) AS a(aggregate, end_offset, source)
WHERE (a.source = 'sale_lines' AND EXISTS (SELECT 1 FROM sale_lines))
   OR (a.source = 'sensor_readings' AND EXISTS (SELECT 1 FROM sensor_readings))
   OR (a.source = 'pos_heartbeats' AND EXISTS (SELECT 1 FROM pos_heartbeats));
