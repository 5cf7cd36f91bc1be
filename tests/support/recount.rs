//! Every analyst rollup and current-state relation against a full recount of the raw
//! tables, written independently of the compactor's incremental statements (set-based
//! where the compactor combines incrementally, `NOT EXISTS` where it keeps a latest).

use deadpool_postgres::Pool;

/// The rollup tables, their key columns and value columns.
pub const ROLLUPS: [(&str, &str, &str); 5] = [
    ("sales_hourly", SALES_KEY, SALES_VALUES),
    ("sales_daily", SALES_KEY, SALES_VALUES),
    ("sensor_stats_5m", SENSOR_KEY, SENSOR_VALUES),
    ("sensor_stats_hourly", SENSOR_KEY, SENSOR_VALUES),
    ("pos_uptime_daily", UPTIME_KEY, UPTIME_VALUES),
];
pub const SALES_KEY: &str = "tenant_id, store_id, sku, currency, bucket";
pub const SALES_VALUES: &str = "units_sold, units_refunded, units_voided, sold_minor, refunded_minor, \
     voided_minor, transactions, refunds, voids, units, revenue_minor";
pub const SENSOR_KEY: &str = "tenant_id, store_id, device_id, kind, bucket";
pub const SENSOR_VALUES: &str =
    "readings, value_min, value_max, value_sum, out_of_range, value_avg";
/// The current-state and analyst relations of migration 0007, their key columns and
/// value columns (those that do not depend on the time of the query).
pub const STATE: [(&str, &str, &str); 5] = [
    (
        "device_last_seen",
        "tenant_id, store_id, device_type, device_id",
        "last_seen_at, last_event_id, app_up, printer, network, software_version",
    ),
    ("stock_on_hand", STOCK_KEY, STOCK_VALUES),
    ("alert_history", ALERT_KEY, ALERT_VALUES),
    ("forecast_daily", FORECAST_KEY, FORECAST_VALUES),
    (
        "forecast_vs_actual",
        FORECAST_KEY,
        "forecast_units, actual_units, error, abs_error, pct_error, within_interval, bucket",
    ),
];
pub const STOCK_KEY: &str = "tenant_id, store_id, sku";
pub const STOCK_VALUES: &str = "on_hand, snapshot_quantity, snapshot_at, snapshot_event_id, \
     adjustments_since, changes, last_change_at";
pub const ALERT_KEY: &str = "tenant_id, store_id, alert_id, started_at";
pub const ALERT_VALUES: &str = "rule_id, subject, summary, severity, fired_at, resolved_at, \
     ended_at, time_to_resolve, last_transition_at, transitions";
pub const FORECAST_KEY: &str = "tenant_id, store_id, sku, day";
pub const FORECAST_VALUES: &str = "issued_at, event_id, method, interval_level, forecast_units, \
     forecast_lower, forecast_upper";
pub const UPTIME_KEY: &str = "tenant_id, store_id, terminal_id, bucket";
pub const UPTIME_VALUES: &str = "heartbeats, heartbeats_app_up, heartbeats_printer_ok, \
     heartbeats_network_online, minutes_seen, minutes_up, uptime_ratio";

/// A full recount of `rollup` from the raw tables, written independently of the
/// compactor's incremental statements.
pub fn recount(rollup: &str) -> String {
    if let Some(sql) = recount_state(rollup) {
        return sql;
    }
    if rollup == "pos_uptime_daily" {
        let minute = "date_trunc('minute', h.occurred_at, 'UTC')";
        return format!(
            "SELECT h.tenant_id, h.store_id, h.terminal_id,
                    date_trunc('day', h.occurred_at, 'UTC') AS bucket,
                    count(*), count(*) FILTER (WHERE h.app_up),
                    count(*) FILTER (WHERE h.printer = 'ok'),
                    count(*) FILTER (WHERE h.network = 'online'),
                    count(DISTINCT {minute}),
                    count(DISTINCT {minute}) FILTER (WHERE h.app_up),
                    (count(DISTINCT {minute}) FILTER (WHERE h.app_up))::float8 / 1440
             FROM pos_heartbeats h
             GROUP BY 1, 2, 3, 4"
        );
    }
    let (bucket, sales) = match rollup {
        "sales_hourly" => ("date_trunc('hour', l.occurred_at, 'UTC')", true),
        "sales_daily" => ("date_trunc('day', l.occurred_at, 'UTC')", true),
        "sensor_stats_5m" => (
            "date_bin('5 minutes', r.occurred_at, timestamptz '2000-01-01Z')",
            false,
        ),
        "sensor_stats_hourly" => ("date_trunc('hour', r.occurred_at, 'UTC')", false),
        other => panic!("no recount for {other}"),
    };
    if sales {
        let sum = |what: &str, kind: &str| {
            let cast = if what.ends_with("bigint") {
                "::bigint"
            } else {
                ""
            };
            format!("coalesce(sum({what}) FILTER (WHERE s.kind = '{kind}'), 0){cast}")
        };
        let qty = "l.quantity::numeric";
        let amount = "round(l.quantity::numeric * l.unit_price_minor)::bigint";
        format!(
            "SELECT l.tenant_id, l.store_id, l.sku, s.currency, {bucket} AS bucket,
                    {us}, {ur}, {uv}, {ms}, {mr}, {mv},
                    count(DISTINCT l.event_id) FILTER (WHERE s.kind = 'sale'),
                    count(DISTINCT l.event_id) FILTER (WHERE s.kind = 'refund'),
                    count(DISTINCT l.event_id) FILTER (WHERE s.kind = 'void'),
                    {us} - {ur} - {uv}, {ms} - {mr} - {mv}
             FROM sale_lines l JOIN sales s USING (tenant_id, store_id, event_id)
             GROUP BY 1, 2, 3, 4, 5",
            us = sum(qty, "sale"),
            ur = sum(qty, "refund"),
            uv = sum(qty, "void"),
            ms = sum(amount, "sale"),
            mr = sum(amount, "refund"),
            mv = sum(amount, "void"),
        )
    } else {
        format!(
            "SELECT r.tenant_id, r.store_id, r.device_id, r.kind, {bucket} AS bucket,
                    count(*), min(r.value), max(r.value), sum(r.value::numeric),
                    count(*) FILTER (WHERE r.value < lim.low OR r.value > lim.high),
                    (sum(r.value::numeric) / count(*))::float8
             FROM sensor_readings r
             LEFT JOIN sensor_limits lim ON lim.kind = r.kind AND lim.appliance = coalesce(
                 (SELECT x.appliance FROM sensor_limits x
                  WHERE x.kind = r.kind AND x.appliance = r.appliance), '*')
             GROUP BY 1, 2, 3, 4, 5"
        )
    }
}

/// The stored forecast day that stands for its store/sku/day: issued before the UTC
/// day began, and no such day of a later forecast (issued_at, then event_id).
const STANDING_FORECASTS: &str = "
    SELECT d.tenant_id, d.store_id, d.sku, d.day, d.issued_at, d.event_id, f.method,
           f.interval_level, d.mean, d.lower, d.upper
    FROM demand_forecast_days d
    JOIN demand_forecasts f USING (tenant_id, store_id, event_id)
    WHERE d.issued_at < d.day::timestamp AT TIME ZONE 'UTC'
      AND NOT EXISTS (
          SELECT 1 FROM demand_forecast_days x
          WHERE x.tenant_id = d.tenant_id AND x.store_id = d.store_id AND x.sku = d.sku
            AND x.day = d.day AND x.issued_at < x.day::timestamp AT TIME ZONE 'UTC'
            AND (x.issued_at, x.event_id) > (d.issued_at, d.event_id))";

fn recount_state(relation: &str) -> Option<String> {
    let sql = match relation {
        "device_last_seen" => "
            SELECT h.tenant_id, h.store_id, 'pos_terminal', h.terminal_id, h.occurred_at,
                   h.event_id, h.app_up, h.printer, h.network, h.software_version
            FROM pos_heartbeats h
            WHERE NOT EXISTS (
                SELECT 1 FROM pos_heartbeats x
                WHERE x.tenant_id = h.tenant_id AND x.store_id = h.store_id
                  AND x.terminal_id = h.terminal_id
                  AND (x.occurred_at, x.event_id) > (h.occurred_at, h.event_id))
            UNION ALL
            SELECT r.tenant_id, r.store_id, 'sensor', r.device_id, r.occurred_at, r.event_id,
                   NULL, NULL, NULL, NULL
            FROM sensor_readings r
            WHERE NOT EXISTS (
                SELECT 1 FROM sensor_readings x
                WHERE x.tenant_id = r.tenant_id AND x.store_id = r.store_id
                  AND x.device_id = r.device_id
                  AND (x.occurred_at, x.event_id) > (r.occurred_at, r.event_id))"
            .to_string(),
        "stock_on_hand" => "
            SELECT k.tenant_id, k.store_id, k.sku,
                   coalesce(s.quantity::numeric, 0) + adj.quantity,
                   s.quantity::numeric, s.occurred_at, s.event_id, adj.quantity,
                   k.changes, k.last_change_at
            FROM (SELECT tenant_id, store_id, sku, count(*) AS changes,
                         max(occurred_at) AS last_change_at
                  FROM inventory_changes GROUP BY 1, 2, 3) k
            LEFT JOIN (
                SELECT c.* FROM inventory_changes c
                WHERE c.kind = 'snapshot' AND NOT EXISTS (
                    SELECT 1 FROM inventory_changes x
                    WHERE x.kind = 'snapshot' AND x.tenant_id = c.tenant_id
                      AND x.store_id = c.store_id AND x.sku = c.sku
                      AND (x.occurred_at, x.event_id) > (c.occurred_at, c.event_id))
            ) s USING (tenant_id, store_id, sku)
            CROSS JOIN LATERAL (
                SELECT coalesce(sum(a.quantity::numeric), 0) AS quantity
                FROM inventory_changes a
                WHERE a.tenant_id = k.tenant_id AND a.store_id = k.store_id AND a.sku = k.sku
                  AND a.kind = 'adjustment'
                  AND (s.occurred_at IS NULL OR a.occurred_at > s.occurred_at)
            ) adj"
            .to_string(),
        "alert_history" => "
            SELECT t.tenant_id, t.store_id, t.alert_id, t.started_at,
                   (array_agg(t.rule_id ORDER BY t.occurred_at, t.event_id))[1],
                   (array_agg(t.subject ORDER BY t.occurred_at, t.event_id))[1],
                   (array_agg(t.summary ORDER BY t.occurred_at, t.event_id))[1],
                   CASE max(CASE t.severity WHEN 'info' THEN 1 WHEN 'warning' THEN 2 ELSE 3 END)
                       WHEN 1 THEN 'info' WHEN 2 THEN 'warning' ELSE 'critical' END,
                   min(t.occurred_at) FILTER (WHERE t.state = 'firing'),
                   min(t.occurred_at) FILTER (WHERE t.state = 'resolved'),
                   min(t.ended_at),
                   min(t.occurred_at) FILTER (WHERE t.state = 'resolved') - t.started_at,
                   max(t.occurred_at),
                   count(*)
            FROM alert_transitions t
            GROUP BY t.tenant_id, t.store_id, t.alert_id, t.started_at"
            .to_string(),
        "forecast_daily" => format!("SELECT * FROM ({STANDING_FORECASTS}) f"),
        "forecast_vs_actual" => format!(
            "SELECT f.tenant_id, f.store_id, f.sku, f.day, f.mean, a.units,
                    a.units::float8 - f.mean, abs(a.units::float8 - f.mean),
                    CASE WHEN a.units = 0 THEN NULL
                         ELSE abs(a.units::float8 - f.mean) / a.units::float8 END,
                    a.units >= f.lower::numeric AND a.units <= f.upper::numeric,
                    (f.day::text || ' 00:00:00+00')::timestamptz
             FROM ({STANDING_FORECASTS}) f
             CROSS JOIN LATERAL (
                 SELECT coalesce(sum(CASE l.kind WHEN 'sale' THEN l.quantity::numeric
                                                 ELSE -l.quantity::numeric END), 0) AS units
                 FROM sale_lines l
                 WHERE l.tenant_id = f.tenant_id AND l.store_id = f.store_id AND l.sku = f.sku
                   AND (l.occurred_at AT TIME ZONE 'UTC')::date = f.day
             ) a"
        ),
        _ => return None,
    };
    Some(sql)
}

/// Rows where `rollup` and its recount differ (missing on either side included).
async fn differences(pool: &Pool, rollup: &str, key: &str, values: &str) -> Vec<String> {
    let join: Vec<String> = key.split(", ").map(|k| format!("a.{k} = b.{k}")).collect();
    let sql = format!(
        "SELECT a::text, b::text
         FROM (SELECT {key}, {values} FROM {rollup}) a
         FULL JOIN ({recount}) AS b({key}, {values}) ON {on}
         WHERE a IS DISTINCT FROM b
         LIMIT 10",
        recount = recount(rollup),
        on = join.join(" AND "),
    );
    let client = pool.get().await.expect("client");
    client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| {
            format!(
                "rollup {:?} vs recount {:?}",
                r.get::<_, Option<String>>(0),
                r.get::<_, Option<String>>(1)
            )
        })
        .collect()
}

/// `Err` lists (up to 10 per relation) rows where a rollup or a current-state
/// relation and its recount differ.
pub async fn rollups_equal_recount(pool: &Pool) -> Result<(), String> {
    let mut all = Vec::new();
    for (rollup, key, values) in ROLLUPS.into_iter().chain(STATE) {
        for d in differences(pool, rollup, key, values).await {
            all.push(format!("{rollup}: {d}"));
        }
    }
    if all.is_empty() {
        Ok(())
    } else {
        Err(all.join("\n"))
    }
}
