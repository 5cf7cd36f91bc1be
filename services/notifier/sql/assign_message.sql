-- Fixes which message carries these deliveries before it is sent, so a resend after a
-- crash is the same message with the same Idempotency-Key.
UPDATE notifier.deliveries
   SET message_id = $3
 WHERE receiver = $1 AND transition_id = ANY($2) AND status = 'pending' AND message_id IS NULL
