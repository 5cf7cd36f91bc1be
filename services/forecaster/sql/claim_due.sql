-- Claims up to $1 series due for a forecast for $2 seconds: never forecast, not
-- forecast for $3 seconds (the schedule), or with at least $4 new sale lines or a
-- stock change and not forecast for $5 seconds. SKIP LOCKED: replicas share the work.
UPDATE forecaster.series s
SET claimed_until = now() + make_interval(secs => $2)
FROM (
    SELECT tenant_id, store_id, sku FROM forecaster.series
    WHERE (claimed_until IS NULL OR claimed_until < now())
      AND first_day IS NOT NULL
      AND (last_forecast_at IS NULL
           OR last_forecast_at < now() - make_interval(secs => $3)
           OR ((lines_since_forecast >= $4 OR stock_changed)
               AND last_forecast_at < now() - make_interval(secs => $5)))
    ORDER BY last_forecast_at NULLS FIRST
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) due
WHERE s.tenant_id = due.tenant_id AND s.store_id = due.store_id AND s.sku = due.sku
RETURNING s.tenant_id, s.store_id, s.sku, s.first_day, s.lines_since_forecast, s.stock_changed
