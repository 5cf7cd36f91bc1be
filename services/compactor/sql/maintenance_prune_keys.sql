-- Keys of raw relation $1 that no stored row can have any more: older than the oldest
-- partition (chunk) left, or, with none left, than the retention cutoff now - $2.
-- Uncommitted keys of a concurrent writer are not visible here, and a partition it
-- created for them is, once committed: a key never leaves while its row may exist.
DELETE FROM event_keys
WHERE relation = $1
  AND occurred_at < coalesce((SELECT min(range_start) FROM raw_partitions WHERE relation = $1),
                             now() - $2::text::interval)
