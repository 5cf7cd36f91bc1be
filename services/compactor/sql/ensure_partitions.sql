-- Plain flavour: creates the partitions of raw table $1 holding the times $2 unless
-- they exist (migration 0009's storepulse_ensure_partitions); returns how many.
SELECT storepulse_ensure_partitions($1, $2::timestamptz[])
