-- Acknowledges an alert the notifier has routed (the first acknowledgement is kept);
-- returns the acknowledgement in force, nothing for an unknown alert.
WITH known AS (
    SELECT 1 FROM notifier.deliveries WHERE alert_id = $1 LIMIT 1
), inserted AS (
    INSERT INTO notifier.acks (alert_id, acked_by, comment)
    SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM known)
    ON CONFLICT (alert_id) DO NOTHING
    RETURNING alert_id, acked_by, comment, acked_at
)
SELECT alert_id, acked_by, comment, acked_at FROM inserted
UNION ALL
SELECT alert_id, acked_by, comment, acked_at FROM notifier.acks WHERE alert_id = $1
LIMIT 1
