-- Arrival frontiers of one partition.
UPDATE rules.partitions SET arrival = $3, updated_at = now()
WHERE consumer_group = $1 AND partition = $2
