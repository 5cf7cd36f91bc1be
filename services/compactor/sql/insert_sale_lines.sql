-- The lines of newly inserted sales and their increments to sales_hourly and
-- sales_daily, in one statement. Only lines inserted by this statement are counted
-- (ins), so a retried, conflicting or already applied event never adds to a rollup.
-- $9 kind and $10 currency are the line's sale's (not columns of sale_lines).
WITH src AS (
    SELECT *
    FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::timestamptz[], $6::text[],
                $7::float8[], $8::bigint[], $9::text[], $10::text[])
        AS u(event_id, line_no, tenant_id, store_id, occurred_at, sku, quantity,
             unit_price_minor, kind, currency)
), ins AS (
    INSERT INTO sale_lines (event_id, line_no, tenant_id, store_id, occurred_at, sku, quantity,
                            unit_price_minor)
    SELECT event_id, line_no, tenant_id, store_id, occurred_at, sku, quantity, unit_price_minor
    FROM src
    ON CONFLICT (tenant_id, store_id, event_id, line_no) DO NOTHING
    RETURNING tenant_id, store_id, event_id, line_no
), new AS (
    SELECT s.tenant_id, s.store_id, s.sku, s.currency, s.kind, s.event_id,
           date_trunc('hour', s.occurred_at, 'UTC') AS hour,
           date_trunc('day', s.occurred_at, 'UTC') AS day,
           s.quantity::numeric AS qty,
           round(s.quantity::numeric * s.unit_price_minor)::bigint AS amount
    FROM src s
    JOIN ins USING (tenant_id, store_id, event_id, line_no)
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
SELECT count(*) FROM ins
