-- Plain PostgreSQL flavour (the TimescaleDB variant is 0009_time_partitioning.timescaledb.sql).
--
-- The read store records its flavour, and the raw tables become declarative range
-- partitions by event time (decision 0009): retention drops whole partitions.
-- Partition bounds are aligned like TimescaleDB's chunks: multiples of the relation's
-- interval since 1970-01-01 00:00 UTC (1 day: UTC midnights; 7 days: Thursdays), so
-- a row is in the same time range on both flavours. Partitions are created ahead of
-- time by the compactor's maintenance task and on demand by the writer (for late or
-- replayed events) with storepulse_ensure_partitions, named <relation>_pYYYYMMDD after
-- their UTC start.

CREATE TABLE read_store (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    flavour  text    NOT NULL CHECK (flavour IN ('plain', 'timescaledb'))
);
COMMENT ON TABLE read_store IS
    'The flavour of this read store, chosen at migration 9 and fixed: plain (partitioned tables, rollups kept by the compactor) or timescaledb (hypertables, continuous aggregates).';
INSERT INTO read_store (flavour) VALUES ('plain');

CREATE TABLE raw_relations (
    relation           text     PRIMARY KEY,
    time_column        text     NOT NULL,
    partition_interval interval NOT NULL CHECK (partition_interval >= interval '1 hour')
);
COMMENT ON TABLE raw_relations IS
    'Raw event relations partitioned by event time (partitions on plain PostgreSQL, hypertable chunks on TimescaleDB): the time column and the width of one partition. Lines go with their parent event (sale_lines, demand_forecast_days: the same time, the same width).';
INSERT INTO raw_relations (relation, time_column, partition_interval) VALUES
    ('sales', 'occurred_at', '7 days'),
    ('sale_lines', 'occurred_at', '7 days'),
    ('inventory_changes', 'occurred_at', '7 days'),
    ('pos_heartbeats', 'occurred_at', '1 day'),
    ('sensor_readings', 'occurred_at', '1 day'),
    ('rejected_events', 'occurred_at', '7 days'),
    ('alert_transitions', 'occurred_at', '30 days'),
    ('demand_forecasts', 'occurred_at', '7 days'),
    ('demand_forecast_days', 'issued_at', '7 days'),
    ('notification_outcomes', 'occurred_at', '30 days');

-- The start of the partition of width `every` holding `t` (UTC-aligned, DST-proof).
CREATE FUNCTION storepulse_partition_start(t timestamptz, every interval) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT to_timestamp((floor(extract(epoch FROM t) / extract(epoch FROM every))
                         * extract(epoch FROM every))::float8)
$$;

-- Creates the partitions of raw relation `rel` holding the times `at` that do not
-- exist yet; returns how many it created. Partitions are created standalone and then
-- attached, which locks the parent only in SHARE UPDATE EXCLUSIVE mode (writers go on;
-- creations of one relation's partitions are serialised by it).
CREATE FUNCTION storepulse_ensure_partitions(rel text, at timestamptz[]) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, public
AS $$
DECLARE
    every   interval;
    lo      timestamptz;
    hi      timestamptz;
    part    text;
    created integer := 0;
BEGIN
    SELECT r.partition_interval INTO every FROM raw_relations r WHERE r.relation = rel;
    IF every IS NULL THEN
        RAISE EXCEPTION 'storepulse_ensure_partitions: % is not a raw relation', rel;
    END IF;
    FOR lo IN SELECT DISTINCT storepulse_partition_start(t, every) FROM unnest(at) t
              WHERE t IS NOT NULL ORDER BY 1 LOOP
        part := format('%s_p%s', rel, to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD'));
        CONTINUE WHEN to_regclass(format('public.%I', part)) IS NOT NULL;
        -- The lock ATTACH takes anyway (writers' inserts go on); taking a relation
        -- lock also makes this session see partitions others created meanwhile.
        EXECUTE format('LOCK TABLE public.%I IN SHARE UPDATE EXCLUSIVE MODE', rel);
        CONTINUE WHEN to_regclass(format('public.%I', part)) IS NOT NULL;
        hi := lo + extract(epoch FROM every) * interval '1 second';
        BEGIN
            EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE)',
                           part, rel);
            EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                           rel, part, lo, hi);
            created := created + 1;
        EXCEPTION WHEN duplicate_table THEN
            NULL; -- created by another session after all
        END;
    END LOOP;
    RETURN created;
END
$$;

-- A migration that replaces tables (here: with partitioned tables; on TimescaleDB: the
-- rollup tables with continuous aggregates) first saves the views that depend on them,
-- directly or through other views — definition, options, comment, analysts' grants —
-- drops the tables with CASCADE, and puts the views back once the new relations of the
-- same names and columns exist.
CREATE FUNCTION storepulse_stash_views(tables regclass[]) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, public
AS $$
DECLARE
    stashed integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS storepulse_stashed_views (
        created     oid PRIMARY KEY,
        schema_name text NOT NULL,
        view_name   text NOT NULL,
        definition  text NOT NULL,
        options     text[],
        comment     text,
        analysts    text[] NOT NULL
    );
    INSERT INTO storepulse_stashed_views
    WITH RECURSIVE dependents(oid) AS (
        SELECT r.ev_class
        FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
        WHERE d.classid = 'pg_rewrite'::regclass AND d.refobjid = ANY (tables)
          AND r.ev_class <> d.refobjid
        UNION
        SELECT r.ev_class
        FROM dependents p
        JOIN pg_depend d ON d.refobjid = p.oid AND d.classid = 'pg_rewrite'::regclass
        JOIN pg_rewrite r ON r.oid = d.objid
        WHERE r.ev_class <> d.refobjid
    )
    SELECT c.oid, n.nspname, c.relname, rtrim(pg_get_viewdef(c.oid), ';'), c.reloptions,
           obj_description(c.oid, 'pg_class'),
           ARRAY(SELECT a.role_name FROM public.analyst_roles a
                 WHERE has_table_privilege(a.role_name, c.oid, 'SELECT'))
    FROM (SELECT DISTINCT oid FROM dependents) d
    JOIN pg_class c ON c.oid = d.oid AND c.relkind = 'v'
    JOIN pg_namespace n ON n.oid = c.relnamespace
    ON CONFLICT (created) DO NOTHING;
    GET DIAGNOSTICS stashed = ROW_COUNT;
    RETURN stashed;
END
$$;

CREATE FUNCTION storepulse_restore_views() RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, public
AS $$
DECLARE
    v        record;
    analyst  text;
    restored integer := 0;
BEGIN
    IF to_regclass('pg_temp.storepulse_stashed_views') IS NULL THEN
        RETURN 0;
    END IF;
    FOR v IN SELECT * FROM pg_temp.storepulse_stashed_views ORDER BY created LOOP
        EXECUTE format('CREATE VIEW %I.%I%s AS %s', v.schema_name, v.view_name,
                       CASE WHEN v.options IS NULL THEN ''
                            ELSE ' WITH (' || array_to_string(v.options, ', ') || ')' END,
                       v.definition);
        IF v.comment IS NOT NULL THEN
            EXECUTE format('COMMENT ON VIEW %I.%I IS %L', v.schema_name, v.view_name, v.comment);
        END IF;
        FOREACH analyst IN ARRAY v.analysts LOOP
            EXECUTE format('GRANT SELECT ON %I.%I TO %I', v.schema_name, v.view_name, analyst);
        END LOOP;
        restored := restored + 1;
    END LOOP;
    DROP TABLE pg_temp.storepulse_stashed_views;
    RETURN restored;
END
$$;

-- The partitions of every raw relation with their bounds (lower inclusive, upper
-- exclusive), for the maintenance task and for analysts.
CREATE VIEW raw_partitions AS
SELECT r.relation,
       c.relname AS partition,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz AS range_start,
       (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS range_end
FROM raw_relations r
JOIN pg_inherits i ON i.inhparent = format('public.%I', r.relation)::regclass
JOIN pg_class c ON c.oid = i.inhrelid;

-- Convert the raw tables: a partitioned copy with the same columns, the rows moved
-- into partitions, the old table dropped, then the indexes (same names), row-level
-- security, analysts' grants and the views over them as before.
LOCK TABLE sales, sale_lines, inventory_changes, pos_heartbeats, sensor_readings,
           rejected_events, alert_transitions, demand_forecasts, demand_forecast_days,
           notification_outcomes IN ACCESS EXCLUSIVE MODE;
SELECT storepulse_stash_views(ARRAY(SELECT format('public.%I', relation)::regclass
                                    FROM raw_relations));
DO $$
DECLARE
    r       record;
    old     text;
    times   timestamptz[];
    analyst text;
BEGIN
    FOR r IN SELECT relation, time_column FROM raw_relations ORDER BY relation LOOP
        old := r.relation || '_unpartitioned';
        EXECUTE format('ALTER TABLE public.%I RENAME TO %I', r.relation, old);
        EXECUTE format('CREATE TABLE public.%I (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (%I)',
                       r.relation, old, r.time_column);
        EXECUTE format('SELECT array_agg(DISTINCT storepulse_partition_start(%I, p.partition_interval))
                        FROM public.%I, raw_relations p WHERE p.relation = %L',
                       r.time_column, old, r.relation)
            INTO times;
        PERFORM storepulse_ensure_partitions(r.relation, coalesce(times, '{}'));
        EXECUTE format('INSERT INTO public.%I SELECT * FROM public.%I', r.relation, old);
        EXECUTE format('DROP TABLE public.%I CASCADE', old);
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', r.relation);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON public.%I FOR SELECT USING (tenant_id = storepulse_analyst_tenant(current_user))',
            r.relation);
        FOR analyst IN SELECT role_name FROM analyst_roles LOOP
            EXECUTE format('GRANT SELECT ON public.%I TO %I', r.relation, analyst);
        END LOOP;
    END LOOP;
END
$$;

CREATE INDEX sales_store_time ON sales (tenant_id, store_id, occurred_at);
CREATE INDEX sale_lines_store_sku_time ON sale_lines (tenant_id, store_id, sku, occurred_at);
CREATE INDEX inventory_store_sku_time ON inventory_changes (tenant_id, store_id, sku, occurred_at);
CREATE INDEX pos_heartbeats_store_time ON pos_heartbeats (tenant_id, store_id, terminal_id, occurred_at);
CREATE INDEX sensor_readings_store_device_time ON sensor_readings (tenant_id, store_id, device_id, occurred_at);
CREATE INDEX rejected_events_time ON rejected_events (received_at);
CREATE INDEX alert_transitions_incident ON alert_transitions (tenant_id, store_id, alert_id, started_at);
CREATE INDEX alert_transitions_time ON alert_transitions (occurred_at);
CREATE INDEX demand_forecasts_store_sku_time ON demand_forecasts (tenant_id, store_id, sku, occurred_at);
CREATE INDEX demand_forecast_days_sku_day ON demand_forecast_days (tenant_id, store_id, sku, day);
CREATE INDEX demand_forecast_days_event ON demand_forecast_days (tenant_id, store_id, event_id);
CREATE INDEX notification_outcomes_alert ON notification_outcomes (tenant_id, store_id, alert_id);
CREATE INDEX notification_outcomes_time ON notification_outcomes (occurred_at);

SELECT storepulse_restore_views();
