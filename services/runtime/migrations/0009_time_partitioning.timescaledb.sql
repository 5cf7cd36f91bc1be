-- TimescaleDB flavour (the plain PostgreSQL variant is 0009_time_partitioning.sql).
--
-- The read store records its flavour, and the raw tables become hypertables by
-- event time (decision 0009), with the same time ranges as the plain flavour's
-- partitions (chunks are aligned to multiples of the interval since 1970-01-01 UTC).
-- Chunks older than 7 days are compressed (segmented by tenant and store); late rows
-- may still be inserted into them. Retention policies are set by the compactor from
-- its configuration.
--
-- TimescaleDB cannot compress a table with row-level security, so on this flavour the
-- raw hypertables carry none and analysts do not read them: analyst roles read views
-- of the same names in schema storepulse_analyst (first on their search_path), each
-- showing only the rows of the role's tenant (decision 0011).

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE read_store (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    flavour  text    NOT NULL CHECK (flavour IN ('plain', 'timescaledb'))
);
COMMENT ON TABLE read_store IS
    'The flavour of this read store, chosen at migration 9 and fixed: plain (partitioned tables, rollups kept by the compactor) or timescaledb (hypertables, continuous aggregates).';
INSERT INTO read_store (flavour) VALUES ('timescaledb');

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

SELECT create_hypertable(format('public.%I', relation)::regclass,
                         by_range(time_column, partition_interval),
                         migrate_data => true)
FROM raw_relations
ORDER BY relation;

CREATE SCHEMA storepulse_analyst;
COMMENT ON SCHEMA storepulse_analyst IS
    'Views of the raw relations for analyst roles (first on their search_path): only the rows of the role''s tenant.';

DO $$
DECLARE
    r       record;
    analyst text;
BEGIN
    FOR r IN SELECT relation, time_column FROM raw_relations ORDER BY relation LOOP
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON public.%I', r.relation);
        EXECUTE format('ALTER TABLE public.%I DISABLE ROW LEVEL SECURITY', r.relation);
        FOR analyst IN SELECT role_name FROM analyst_roles LOOP
            EXECUTE format('REVOKE SELECT ON public.%I FROM %I', r.relation, analyst);
        END LOOP;
        EXECUTE format(
            'CREATE VIEW storepulse_analyst.%I WITH (security_barrier) AS SELECT * FROM public.%I WHERE tenant_id = (SELECT storepulse_analyst_tenant(current_user))',
            r.relation, r.relation);
        EXECUTE format(
            'ALTER TABLE public.%I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
            r.relation, 'tenant_id, store_id', r.time_column || ' DESC');
        PERFORM add_compression_policy(format('public.%I', r.relation)::regclass,
                                       compress_after => interval '7 days');
    END LOOP;
    FOR analyst IN SELECT role_name FROM analyst_roles LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA storepulse_analyst TO %I', analyst);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA storepulse_analyst TO %I', analyst);
        EXECUTE format('ALTER ROLE %I SET search_path = storepulse_analyst, public', analyst);
    END LOOP;
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

-- The chunks of every raw relation with their bounds (lower inclusive, upper
-- exclusive): the same view as the plain flavour's partitions.
CREATE VIEW raw_partitions AS
SELECT r.relation, c.chunk_name AS partition, c.range_start, c.range_end
FROM raw_relations r
JOIN timescaledb_information.chunks c
  ON c.hypertable_schema = 'public' AND c.hypertable_name = r.relation;
