-- TimescaleDB: the retention policy job of hypertable or continuous aggregate $1.$2,
-- and whether its drop_after equals $3.
SELECT job_id, (config->>'drop_after')::interval = $3::text::interval
FROM timescaledb_information.jobs
WHERE proc_name = 'policy_retention' AND hypertable_schema = $1 AND hypertable_name = $2
