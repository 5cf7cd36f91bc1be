-- The daily points of newly inserted forecasts (the writer passes only days of
-- forecasts whose key the forecasts statement inserted), each with its forecast's
-- method and interval level ($10, $11: not columns of demand_forecast_days). CTE ins
-- holds the days inserted; the writer continues the statement with
-- state_forecast_days.sql and appends the final select.
WITH src AS (
    SELECT *
    FROM unnest($1::text[], $2::text[], $3::uuid[], $4::date[], $5::text[], $6::timestamptz[],
                $7::float8[], $8::float8[], $9::float8[], $10::text[], $11::float8[])
        AS u(tenant_id, store_id, event_id, day, sku, issued_at, mean, lower, upper, method,
             interval_level)
), ins AS (
    INSERT INTO demand_forecast_days (tenant_id, store_id, event_id, day, sku, issued_at, mean,
                                      lower, upper)
    SELECT tenant_id, store_id, event_id, day, sku, issued_at, mean, lower, upper FROM src
    RETURNING tenant_id, store_id, event_id, day, sku, issued_at, mean, lower, upper
)
