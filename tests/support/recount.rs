//! Every analyst rollup against a full recount of the raw tables, written
//! independently of the compactor's incremental statements.

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
pub const UPTIME_KEY: &str = "tenant_id, store_id, terminal_id, bucket";
pub const UPTIME_VALUES: &str = "heartbeats, heartbeats_app_up, heartbeats_printer_ok, \
     heartbeats_network_online, minutes_seen, minutes_up, uptime_ratio";

/// A full recount of `rollup` from the raw tables, written independently of the
/// compactor's incremental statements.
pub fn recount(rollup: &str) -> String {
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

/// Rows where `rollup` and its recount differ (missing on either side included).
async fn differences(pool: &Pool, rollup: &str, key: &str, values: &str) -> Vec<String> {
    let join: Vec<String> = key.split(", ").map(|k| format!("a.{k} = b.{k}")).collect();
    let sql = format!(
        "SELECT a::text, b::text
         FROM (SELECT {key}, {values} FROM {rollup}) a
         FULL JOIN ({recount}) b ON {on}
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

/// `Err` lists (up to 10 per relation) rows where a rollup and its recount differ.
pub async fn rollups_equal_recount(pool: &Pool) -> Result<(), String> {
    let mut all = Vec::new();
    for (rollup, key, values) in ROLLUPS {
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
