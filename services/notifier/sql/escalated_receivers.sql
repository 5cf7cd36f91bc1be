-- The escalation receivers each of these alerts reached (a step delivered to them):
-- who must also hear that it resolved. One row per (alert, receiver), with the route
-- and group of its first step.
SELECT DISTINCT ON (e.alert_id, e.receiver) e.alert_id, e.receiver, e.route, e.group_key
  FROM notifier.deliveries e
 WHERE e.alert_id = ANY($1)
   AND starts_with(e.transition_id, e.alert_id || ':firing:escalation-')
   AND e.status = 'delivered'
 ORDER BY e.alert_id, e.receiver, e.transition_id
