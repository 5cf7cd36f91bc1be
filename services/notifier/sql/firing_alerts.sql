-- Alerts whose firing transition was recorded and whose resolved one was not.
SELECT DISTINCT ON (f.alert_id) f.alert
  FROM notifier.deliveries f
 WHERE f.alert_state = 'firing'
   AND NOT EXISTS (SELECT 1 FROM notifier.deliveries r
                    WHERE r.alert_id = f.alert_id AND r.alert_state = 'resolved')
 ORDER BY f.alert_id
