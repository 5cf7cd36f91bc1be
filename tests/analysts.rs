//! Tenant isolation for analysts against a real Postgres: a role made by
//! `storepulse analysts create` reads only its tenant's rows, in raw tables and
//! rollups alike, and nothing outside the read store.

mod support;

use std::collections::BTreeMap;

use storepulse_compactor::writer::ReadStoreWriter;
use storepulse_runtime::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Positioned};
use storepulse_runtime::db::Flavour;
use storepulse_runtime::records::*;
use support::TestDb;
use uuid::Uuid;

fn reading(tenant: &str, value: f64) -> SensorReading {
    let now = chrono::Utc::now().timestamp_micros();
    SensorReading {
        envelope: Envelope {
            event_id: Uuid::new_v4().to_string(),
            tenant_id: tenant.into(),
            store_id: "s-1".into(),
            occurred_at: now,
            received_at: now,
            source: "test".into(),
        },
        device_id: "freezer-1".into(),
        kind: SensorKind::Temperature,
        value,
        unit: SensorUnit::Celsius,
        appliance: Some("freezer".into()),
    }
}

fn storepulse(args: &[&str], database_url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_storepulse"))
        .args(args)
        .args(["--database-url", database_url])
        .env("STOREPULSE_ANALYST_PASSWORD", "s3cret'quote")
        .env("STOREPULSE_LOG__FORMAT", "text")
        .output()
        .expect("run storepulse")
}

async fn only_its_tenant(flavour: Flavour) {
    let db = TestDb::start_flavour("analysts", flavour).await;
    let codec = AvroCodec::new();
    let mut writer = ReadStoreWriter::new(
        db.pool.clone(),
        codec.clone(),
        "g".into(),
        &prometheus::Registry::new(),
    )
    .expect("writer");
    let mut batch = Batch {
        items: Vec::new(),
        next_offsets: BTreeMap::new(),
    };
    for (offset, r) in [
        reading("acme", -18.0),
        reading("acme", -17.0),
        reading("globex", -20.0),
    ]
    .iter()
    .enumerate()
    {
        let rec = ConsumedRecord {
            topic: topic::SENSOR_READINGS.into(),
            partition: 0,
            offset: offset as i64,
            key: Some(r.envelope.partition_key().into_bytes()),
            payload: codec.encode(r).expect("encode"),
        };
        batch.items.push(Positioned {
            topic: rec.topic.clone(),
            partition: 0,
            offset: offset as i64,
            item: writer.decode(&rec).expect("decode"),
        });
        batch
            .next_offsets
            .insert((topic::SENSOR_READINGS.into(), 0), offset as i64 + 1);
    }
    writer.apply(&batch).await.expect("apply");
    // Every other topic's relations, for both tenants.
    let mut feed = support::feed::Feed::new(&db.pool, "g");
    let now = chrono::Utc::now().timestamp_micros();
    for (n, tenant) in ["acme", "acme", "globex"].iter().enumerate() {
        let envelope = Envelope {
            event_id: Uuid::new_v4().to_string(),
            tenant_id: tenant.to_string(),
            store_id: "s-1".into(),
            occurred_at: now,
            received_at: now,
            source: "test".into(),
        };
        feed.push(&AlertTransition {
            envelope: envelope.clone(),
            alert_id: format!("a-{n}"),
            rule_id: "r".into(),
            state: AlertState::Firing,
            severity: AlertSeverity::Warning,
            subject: "freezer-1".into(),
            summary: "warm".into(),
            value: None,
            started_at: now,
            labels: Default::default(),
            ended_at: None,
            rule_kind: None,
        });
        feed.push(&DemandForecast {
            envelope: envelope.clone(),
            sku: format!("sku-{n}"),
            method: "m".into(),
            interval_level: 0.9,
            days: vec![ForecastDay {
                date: (now / 86_400_000_000) as i32 + 1,
                mean: 1.0,
                lower: 0.0,
                upper: 2.0,
                wide_lower: None,
                wide_upper: None,
            }],
            on_hand: None,
            days_of_cover: None,
            stock_out_probability: None,
            wide_interval_level: None,
            lead_time_days: None,
            backtest: None,
        });
        feed.push(&InventoryChange {
            envelope: Envelope {
                event_id: Uuid::new_v4().to_string(),
                ..envelope.clone()
            },
            kind: InventoryChangeKind::Snapshot,
            sku: format!("sku-{n}"),
            quantity: 3.0,
            reason: None,
        });
        feed.push(&NotificationOutcome {
            envelope,
            alert_id: format!("a-{n}"),
            alert_state: NotifiedState::Firing,
            receiver: "manager".into(),
            channel: Channel::Email,
            status: DeliveryStatus::Delivered,
            attempts: 1,
            error: None,
        });
    }
    feed.flush().await.expect("apply");

    let url = &db.postgres.url;
    let out = storepulse(
        &[
            "analysts",
            "create",
            "--tenant",
            "acme",
            "--role",
            "acme_analyst",
        ],
        url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = storepulse(&["analysts", "list"], url);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("acme_analyst") && listed.contains("acme"),
        "{listed}"
    );
    let again = storepulse(
        &[
            "analysts",
            "create",
            "--tenant",
            "acme",
            "--role",
            "acme_analyst",
        ],
        url,
    );
    assert!(!again.status.success(), "a second create is refused");
    let bad = storepulse(
        &["analysts", "create", "--tenant", "acme", "--role", "x;drop"],
        url,
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not allowed"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Connect as the analyst (the test cluster trusts loopback logins).
    let as_analyst = url.replacen("storepulse@", "acme_analyst@", 1);
    let (client, conn) = tokio_postgres::connect(&as_analyst, tokio_postgres::NoTls)
        .await
        .expect("analyst login");
    tokio::spawn(conn);
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.map(|r| r.get::<_, i64>(0)) }
    };
    assert_eq!(
        count("SELECT count(*) FROM sensor_readings")
            .await
            .expect("raw"),
        2
    );
    assert_eq!(
        count("SELECT count(*) FROM sensor_readings WHERE tenant_id = 'globex'")
            .await
            .expect("raw"),
        0
    );
    assert_eq!(
        count("SELECT sum(readings)::bigint FROM sensor_stats_hourly")
            .await
            .expect("rollup"),
        2
    );
    for relation in [
        "alert_transitions",
        "demand_forecasts",
        "demand_forecast_days",
        "notification_outcomes",
        "stock_on_hand",
        "alert_history",
        "open_alerts",
        "forecast_daily",
        "forecast_vs_actual",
    ] {
        let all = client
            .query_one(&format!("SELECT count(*) FROM {relation}"), &[])
            .await
            .map(|r| r.get::<_, i64>(0));
        assert_eq!(all.expect(relation), 2, "{relation}: only acme's rows");
    }
    // What the analyst relations are made of is not readable around the filters.
    let around = match flavour {
        // Row-level security on the tables themselves.
        Flavour::Plain => vec![("SELECT count(*) FROM public.sensor_readings", Some(2))],
        // The raw hypertables and the continuous aggregates are not granted.
        Flavour::TimescaleDb => vec![
            ("SELECT count(*) FROM public.sensor_readings", None),
            (
                "SELECT count(*) FROM storepulse_aggregates.sensor_stats_hourly",
                None,
            ),
        ],
    };
    for (sql, expected) in around {
        assert_eq!(count(sql).await.ok(), expected, "{sql}");
    }
    assert_eq!(
        count("SELECT count(*) FROM device_status")
            .await
            .expect("view"),
        1,
        "acme's freezer only"
    );
    assert_eq!(
        count("SELECT count(*) FROM device_status_settings")
            .await
            .expect("settings"),
        2
    );
    let denied = count("SELECT count(*) FROM event_keys").await;
    assert!(denied.is_err(), "no access to the key ledger");
    let denied = count("SELECT count(*) FROM api_keys").await;
    assert!(denied.is_err(), "no access to API keys");
    let denied = client.execute("DELETE FROM sensor_readings", &[]).await;
    assert!(denied.is_err(), "read only");
    drop(client);

    // The owner (the compactor's role) still sees every tenant.
    assert_eq!(db.count("SELECT count(*) FROM sensor_readings").await, 3);
    let out = storepulse(&["analysts", "drop", "--role", "acme_analyst"], url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tokio_postgres::connect(&as_analyst, tokio_postgres::NoTls)
            .await
            .is_err(),
        "the role is gone"
    );
}
flavour_tests!(an_analyst_role_sees_only_its_tenant, super::only_its_tenant);

/// Every relation with a `tenant_id` column is isolated: a table has row-level
/// security with the tenant policy, or (TimescaleDB's raw hypertables, which cannot
/// have it) analysts read it only through a tenant-filtered view of the same name in
/// `storepulse_analyst`; a view runs with its invoker's rights (so the policies of the
/// tables under it apply) or filters by the analyst's tenant itself.
async fn every_relation_isolated(flavour: Flavour) {
    let db = TestDb::start_flavour("analystsrls", flavour).await;
    let client = db.pool.get().await.expect("client");
    let filtered = "pg_get_viewdef(v.oid) LIKE '%storepulse_analyst_tenant(CURRENT_USER)%'";
    let open: Vec<String> = client
        .query(
            &format!(
                "SELECT n.nspname || '.' || c.relname || ' (' || c.relkind::text || ')'
                 FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
                 WHERE n.nspname IN ('public', 'storepulse_analyst')
                   AND c.relkind IN ('r', 'p', 'v', 'm')
                   -- internal: roles, API keys, the idempotency ledger (never granted to analysts)
                   AND c.relname NOT IN ('analyst_roles', 'api_keys', 'event_keys')
                   AND NOT CASE c.relkind
                       WHEN 'v' THEN coalesce('security_invoker=true' = ANY (c.reloptions), false)
                                     OR EXISTS (SELECT 1 FROM pg_class v WHERE v.oid = c.oid AND {filtered})
                       ELSE (c.relrowsecurity AND EXISTS (
                                SELECT 1 FROM pg_policy p
                                WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation'))
                            OR EXISTS (
                                SELECT 1 FROM pg_class v
                                WHERE v.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'storepulse_analyst')
                                  AND v.relname = c.relname AND {filtered})
                   END
                 ORDER BY 1"
            ),
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(open.is_empty(), "not isolated per tenant: {open:?}");
    let scoped = db
        .count(
            "SELECT count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
             WHERE a.attname = 'tenant_id' AND c.relnamespace = 'public'::regnamespace
               AND c.relkind IN ('r', 'p', 'v')",
        )
        .await;
    assert!(scoped >= 16, "the check saw the relations: {scoped}");
}
flavour_tests!(
    every_tenant_scoped_relation_is_isolated,
    super::every_relation_isolated
);
