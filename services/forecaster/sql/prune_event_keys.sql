-- Forgets event keys older than $1 days.
DELETE FROM forecaster.event_keys WHERE seen_at < now() - make_interval(days => $1)
