-- The final outcome of a message, for each delivery it carried.
UPDATE notifier.deliveries
   SET status = $3, channel = $4, attempts = $5, error = $6, finished_at = now()
 WHERE receiver = $1 AND message_id = $2 AND status = 'pending'
