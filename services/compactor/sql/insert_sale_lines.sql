-- The lines of newly inserted sales (the writer passes only lines of sales whose key
-- the sales statement inserted), each with its sale's kind and currency. CTE ins holds
-- the lines inserted; on plain PostgreSQL rollup_sale_lines.sql continues the
-- statement with the increments of sales_hourly and sales_daily.
WITH ins AS (
    INSERT INTO sale_lines (event_id, line_no, tenant_id, store_id, occurred_at, sku, quantity,
                            unit_price_minor, kind, currency)
    SELECT *
    FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                $7::float8[], $8::bigint[], $9::text[], $10::text[])
    RETURNING event_id, tenant_id, store_id, occurred_at, sku, quantity, unit_price_minor,
              kind, currency
)
