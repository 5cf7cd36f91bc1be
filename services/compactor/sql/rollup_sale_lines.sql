-- Plain PostgreSQL only (decision 0008): the increments of sales_hourly and sales_daily
-- from the lines just copied into sale_lines (CTE ins: exactly those lines, given as
-- arrays by the writer; decision 0016), which this text continues.
, new AS (
    SELECT tenant_id, store_id, sku, currency, kind, event_id,
           date_trunc('hour', occurred_at, 'UTC') AS hour,
           date_trunc('day', occurred_at, 'UTC') AS day,
           quantity::numeric AS qty,
           round(quantity::numeric * unit_price_minor)::bigint AS amount
    FROM ins
), hourly AS (
    INSERT INTO sales_hourly (tenant_id, store_id, sku, currency, bucket,
                              units_sold, units_refunded, units_voided,
                              sold_minor, refunded_minor, voided_minor,
                              transactions, refunds, voids)
    SELECT tenant_id, store_id, sku, currency, hour,
           coalesce(sum(qty) FILTER (WHERE kind = 'sale'), 0),
           coalesce(sum(qty) FILTER (WHERE kind = 'refund'), 0),
           coalesce(sum(qty) FILTER (WHERE kind = 'void'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'sale'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'void'), 0),
           count(DISTINCT event_id) FILTER (WHERE kind = 'sale'),
           count(DISTINCT event_id) FILTER (WHERE kind = 'refund'),
           count(DISTINCT event_id) FILTER (WHERE kind = 'void')
    FROM new
    GROUP BY tenant_id, store_id, sku, currency, hour
    ON CONFLICT (tenant_id, store_id, sku, currency, bucket) DO UPDATE SET
        units_sold     = sales_hourly.units_sold     + EXCLUDED.units_sold,
        units_refunded = sales_hourly.units_refunded + EXCLUDED.units_refunded,
        units_voided   = sales_hourly.units_voided   + EXCLUDED.units_voided,
        sold_minor     = sales_hourly.sold_minor     + EXCLUDED.sold_minor,
        refunded_minor = sales_hourly.refunded_minor + EXCLUDED.refunded_minor,
        voided_minor   = sales_hourly.voided_minor   + EXCLUDED.voided_minor,
        transactions   = sales_hourly.transactions   + EXCLUDED.transactions,
        refunds        = sales_hourly.refunds        + EXCLUDED.refunds,
        voids          = sales_hourly.voids          + EXCLUDED.voids
), daily AS (
    INSERT INTO sales_daily (tenant_id, store_id, sku, currency, bucket,
                             units_sold, units_refunded, units_voided,
                             sold_minor, refunded_minor, voided_minor,
                             transactions, refunds, voids)
    SELECT tenant_id, store_id, sku, currency, day,
           coalesce(sum(qty) FILTER (WHERE kind = 'sale'), 0),
           coalesce(sum(qty) FILTER (WHERE kind = 'refund'), 0),
           coalesce(sum(qty) FILTER (WHERE kind = 'void'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'sale'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0),
           coalesce(sum(amount) FILTER (WHERE kind = 'void'), 0),
           count(DISTINCT event_id) FILTER (WHERE kind = 'sale'),
           count(DISTINCT event_id) FILTER (WHERE kind = 'refund'),
           count(DISTINCT event_id) FILTER (WHERE kind = 'void')
    FROM new
    GROUP BY tenant_id, store_id, sku, currency, day
    ON CONFLICT (tenant_id, store_id, sku, currency, bucket) DO UPDATE SET
        units_sold     = sales_daily.units_sold     + EXCLUDED.units_sold,
        units_refunded = sales_daily.units_refunded + EXCLUDED.units_refunded,
        units_voided   = sales_daily.units_voided   + EXCLUDED.units_voided,
        sold_minor     = sales_daily.sold_minor     + EXCLUDED.sold_minor,
        refunded_minor = sales_daily.refunded_minor + EXCLUDED.refunded_minor,
        voided_minor   = sales_daily.voided_minor   + EXCLUDED.voided_minor,
        transactions   = sales_daily.transactions   + EXCLUDED.transactions,
        refunds        = sales_daily.refunds        + EXCLUDED.refunds,
        voids          = sales_daily.voids          + EXCLUDED.voids
)
