-- Plain PostgreSQL flavour: nothing to do. The analyst relations stay the rollup
-- tables of migrations 0004 and 0005, maintained by the compactor in the rows'
-- transaction (decision 0008). The TimescaleDB variant
-- (0010_continuous_aggregates.timescaledb.sql) makes them continuous aggregates with
-- the same names and columns.
SELECT 1;
