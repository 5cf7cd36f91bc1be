-- Deliveries that will never be sent (a resolve of an alert that was held, and that
-- alert's held firing transition).
UPDATE notifier.deliveries
   SET status = 'suppressed', error = $3, finished_at = now()
 WHERE receiver = $1 AND status = 'pending' AND message_id IS NULL
   AND (transition_id = ANY($2) OR (alert_id || ':resolved') = ANY($2))
