-- The partitions (TimescaleDB: chunks) of raw relation $1 that lie wholly before
-- now - $2, oldest first.
SELECT partition, range_start, range_end
FROM raw_partitions
WHERE relation = $1 AND range_end <= now() - $2::text::interval
ORDER BY range_start
