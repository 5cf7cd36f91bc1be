-- Adds a batch's net units per store/sku/day (doubles to numeric: 15 significant digits).
INSERT INTO forecaster.daily_demand AS d (tenant_id, store_id, sku, day, units, sold, lines)
SELECT k.tenant_id, k.store_id, k.sku, k.day, k.units::numeric, k.sold::numeric, k.lines
FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::float8[], $6::float8[], $7::bigint[])
    AS k(tenant_id, store_id, sku, day, units, sold, lines)
ON CONFLICT (tenant_id, store_id, sku, day)
DO UPDATE SET units = d.units + EXCLUDED.units, sold = d.sold + EXCLUDED.sold, lines = d.lines + EXCLUDED.lines
