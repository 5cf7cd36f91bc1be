-- A receiver's alerts whose first firing notification was delivered, that are
-- neither acknowledged nor resolved: candidates for the next step of their route's
-- escalation ladder. Also how many escalation steps each already has.
SELECT d.alert_id, d.tenant_id, d.store_id, d.route, d.group_key, d.alert, d.finished_at,
       (SELECT count(*) FROM notifier.deliveries e
         WHERE e.alert_id = d.alert_id
           AND starts_with(e.transition_id, d.alert_id || ':firing:escalation-')) AS steps_so_far
  FROM notifier.deliveries d
 WHERE d.receiver = $1 AND d.transition_id = d.alert_id || ':firing' AND d.status = 'delivered'
   AND NOT EXISTS (SELECT 1 FROM notifier.deliveries r
                    WHERE r.alert_id = d.alert_id AND r.alert_state = 'resolved')
   AND NOT EXISTS (SELECT 1 FROM notifier.acks a WHERE a.alert_id = d.alert_id)
 ORDER BY d.finished_at
 LIMIT $2
