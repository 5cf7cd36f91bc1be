-- Finished deliveries whose outcome record is not yet on notifications.v1.
SELECT transition_id, alert_id, alert_state, tenant_id, store_id, status, channel,
       attempts, error, finished_at
  FROM notifier.deliveries
 WHERE receiver = $1 AND status <> 'pending' AND NOT outcome_published
 ORDER BY finished_at
 LIMIT $2
