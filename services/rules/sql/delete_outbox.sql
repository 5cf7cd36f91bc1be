-- Transitions the broker acknowledged.
DELETE FROM rules.outbox WHERE consumer_group = $1 AND seq = ANY($2::bigint[])
