-- Plain flavour: creates the partitions of every raw relation from the one before now
-- to $1 ahead (migration 0009's storepulse_ensure_partitions); returns how many.
SELECT coalesce(sum(storepulse_ensure_partitions(
           r.relation,
           ARRAY(SELECT generate_series(now() - r.partition_interval,
                                        now() + $1::text::interval,
                                        r.partition_interval)))), 0)::bigint
FROM raw_relations r
