UPDATE notifier.deliveries SET outcome_published = true
 WHERE receiver = $1 AND transition_id = ANY($2)
