-- Decided transitions of one partition not yet known to be on alerts.v1, in order.
SELECT seq, partition, event_id, record_key, payload, created_at FROM rules.outbox
WHERE consumer_group = $1 AND partition = $2
ORDER BY seq
