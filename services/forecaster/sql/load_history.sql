-- Daily net units of the claimed series from $4 on.
SELECT d.tenant_id, d.store_id, d.sku, d.day, d.units::double precision
FROM forecaster.daily_demand d
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, store_id, sku) USING (tenant_id, store_id, sku)
WHERE d.day >= $4
