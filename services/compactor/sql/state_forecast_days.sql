-- Both flavours: forecast_daily, the forecast that stands for each store/sku/day, from
-- the forecast days inserted by the same statement (CTE ins of insert_forecast_days.sql,
-- which this text continues, with src for each day's method and interval level). A
-- forecast counts for a day only if it was issued before the day began (00:00 UTC):
-- the day-ahead forecast, never one made while the day's sales were coming in. Of
-- those, the latest issued stands (greatest (issued_at, event_id)), whatever the
-- arrival order.
, standing AS (
    INSERT INTO forecast_daily AS fd (tenant_id, store_id, sku, day, issued_at, event_id, method,
                                      interval_level, forecast_units, forecast_lower,
                                      forecast_upper)
    SELECT DISTINCT ON (i.tenant_id, i.store_id, i.sku, i.day)
           i.tenant_id, i.store_id, i.sku, i.day, i.issued_at, i.event_id, s.method,
           s.interval_level, i.mean, i.lower, i.upper
    FROM ins i
    JOIN src s USING (tenant_id, store_id, event_id, day)
    WHERE i.issued_at < i.day::timestamp AT TIME ZONE 'UTC'
    ORDER BY i.tenant_id, i.store_id, i.sku, i.day, i.issued_at DESC, i.event_id DESC
    ON CONFLICT (tenant_id, store_id, sku, day) DO UPDATE SET
        issued_at      = EXCLUDED.issued_at,
        event_id       = EXCLUDED.event_id,
        method         = EXCLUDED.method,
        interval_level = EXCLUDED.interval_level,
        forecast_units = EXCLUDED.forecast_units,
        forecast_lower = EXCLUDED.forecast_lower,
        forecast_upper = EXCLUDED.forecast_upper
    WHERE (EXCLUDED.issued_at, EXCLUDED.event_id) > (fd.issued_at, fd.event_id)
)
