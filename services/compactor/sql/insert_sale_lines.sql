INSERT INTO sale_lines (event_id, line_no, tenant_id, store_id, occurred_at, sku, quantity, unit_price_minor)
SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                     $7::float8[], $8::bigint[])
ON CONFLICT (tenant_id, store_id, event_id, line_no) DO NOTHING
RETURNING tenant_id, store_id, event_id
