-- Notes new sale lines (and the first day) or a stock change of each store/sku.
INSERT INTO forecaster.series AS s (tenant_id, store_id, sku, first_day, lines_since_forecast, stock_changed)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::date[], $5::bigint[], $6::bool[])
ON CONFLICT (tenant_id, store_id, sku)
DO UPDATE SET first_day = LEAST(s.first_day, EXCLUDED.first_day),
              lines_since_forecast = s.lines_since_forecast + EXCLUDED.lines_since_forecast,
              stock_changed = s.stock_changed OR EXCLUDED.stock_changed
