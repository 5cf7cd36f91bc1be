-- A receiver's alerts still firing (no resolve recorded for any receiver), not
-- acknowledged, whose last
-- delivered notification is the newest of its rows, with nothing pending for it: the
-- candidates for a repeat. $2 bounds the rows looked at.
SELECT DISTINCT ON (d.alert_id)
       d.alert_id, d.tenant_id, d.store_id, d.route, d.group_key, d.alert, d.finished_at,
       (SELECT count(*) FROM notifier.deliveries x
         WHERE x.receiver = d.receiver AND x.alert_id = d.alert_id) AS rows_so_far
  FROM notifier.deliveries d
 WHERE d.receiver = $1 AND d.alert_state = 'firing' AND d.status = 'delivered'
   AND NOT EXISTS (SELECT 1 FROM notifier.deliveries r
                    WHERE r.alert_id = d.alert_id AND r.alert_state = 'resolved')
   AND NOT EXISTS (SELECT 1 FROM notifier.acks a WHERE a.alert_id = d.alert_id)
   AND NOT EXISTS (SELECT 1 FROM notifier.deliveries p
                    WHERE p.receiver = d.receiver AND p.alert_id = d.alert_id
                      AND p.status = 'pending')
 ORDER BY d.alert_id, d.finished_at DESC
 LIMIT $2
