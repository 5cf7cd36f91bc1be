-- On hand of the claimed series: the standing snapshot plus the adjustments after it.
SELECT s.tenant_id, s.store_id, s.sku, coalesce(s.snapshot_quantity, 0) + s.adjustments_since
FROM forecaster.stock s
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant_id, store_id, sku) USING (tenant_id, store_id, sku)
