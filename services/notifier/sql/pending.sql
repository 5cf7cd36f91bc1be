-- A receiver's pending deliveries, oldest first.
SELECT transition_id, alert_id, alert_state, tenant_id, store_id, route, group_key, alert,
       received_at, message_id
  FROM notifier.deliveries
 WHERE receiver = $1 AND status = 'pending'
 ORDER BY received_at, transition_id
 LIMIT $2
