-- A published forecast: the lines it saw no longer count as new, the claim ends.
UPDATE forecaster.series s
SET last_forecast_at = now(), method = k.method, claimed_until = NULL,
    lines_since_forecast = GREATEST(0, s.lines_since_forecast - k.seen),
    stock_changed = s.stock_changed AND NOT k.stock_seen
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bool[]) AS k(tenant_id, store_id, sku, method, seen, stock_seen)
WHERE s.tenant_id = k.tenant_id AND s.store_id = k.store_id AND s.sku = k.sku
