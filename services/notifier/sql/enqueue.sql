-- Records routed transitions as pending (a replay finds them and changes nothing).
-- A resolved transition for a receiver that does not want them is suppressed at once.
INSERT INTO notifier.deliveries
    (transition_id, receiver, alert_id, alert_state, tenant_id, store_id, route, group_key, alert, status, finished_at)
SELECT t, r, a, s, tn, st, ro, g, j,
       CASE WHEN sup THEN 'suppressed' ELSE 'pending' END,
       CASE WHEN sup THEN now() END
  FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::jsonb[], $10::bool[])
       AS x(t, r, a, s, tn, st, ro, g, j, sup)
ON CONFLICT (transition_id, receiver) DO NOTHING
