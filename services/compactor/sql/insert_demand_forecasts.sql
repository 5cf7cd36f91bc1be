-- Demand forecasts: key into event_keys first, the raw row only for keys inserted
-- (CTE ins; the writer appends the final select). Their days follow in
-- insert_forecast_days.sql, for the forecasts this statement inserted.
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                $6::text[], $7::text[], $8::text[], $9::float8[], $10::float8[],
                $11::float8[], $12::float8[], $13::bytea[])
        AS u(event_id, tenant_id, store_id, occurred_at, received_at, source, sku, method,
             interval_level, on_hand, days_of_cover, stock_out_probability, content_hash)
), k AS (
    INSERT INTO event_keys (relation, tenant_id, store_id, event_id, occurred_at, content_hash)
    SELECT 'demand_forecasts', tenant_id, store_id, event_id, occurred_at, content_hash FROM src
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, store_id, event_id
), ins AS (
    INSERT INTO demand_forecasts (event_id, tenant_id, store_id, occurred_at, received_at,
                                  source, sku, method, interval_level, on_hand, days_of_cover,
                                  stock_out_probability, content_hash)
    SELECT s.event_id, s.tenant_id, s.store_id, s.occurred_at, s.received_at, s.source, s.sku,
           s.method, s.interval_level, s.on_hand, s.days_of_cover, s.stock_out_probability,
           s.content_hash
    FROM src s JOIN k USING (tenant_id, store_id, event_id)
    RETURNING tenant_id, store_id, event_id
)
