-- Daily net units of every series (optionally of one tenant and/or store).
SELECT tenant_id, store_id, sku, day, units::double precision
FROM forecaster.daily_demand
WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR store_id = $2)
ORDER BY tenant_id, store_id, sku, day
