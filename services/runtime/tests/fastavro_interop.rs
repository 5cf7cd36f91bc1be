//! Interop with an independent Avro implementation: Python's fastavro, given only the
//! `.avsc` files, (a) computes the same Parsing Canonical Form and fingerprint, (b)
//! writes single-object records our codec decodes (byte-identical to ours), and (c)
//! decodes the bytes our codec wrote.
//!
//! Needs `python3` with `fastavro`; without them this test fails (run
//! `scripts/install-deps.sh`).

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use storepulse_runtime::AvroCodec;
use storepulse_runtime::avro::{fingerprint, parsing_canonical_form};
use storepulse_runtime::records::*;

const INSTALL_HINT: &str = "python3 with fastavro is required: run scripts/install-deps.sh";

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn require_fastavro() {
    let ok = Command::new("python3")
        .args(["-c", "import fastavro"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{INSTALL_HINT}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from python"))
        .collect()
}

/// The record as the script's JSON: Avro `bytes` fields as `{"$bytes": hex}`.
fn to_json<T: Record>(record: &T, bytes_fields: &[&str]) -> Value {
    let mut v = serde_json::to_value(record).expect("record to JSON");
    for field in bytes_fields {
        let raw: Vec<u8> = serde_json::from_value(v[*field].clone()).expect("bytes as array");
        v[*field] = json!({ "$bytes": hex(&raw) });
    }
    v
}

/// Sends `records` through fastavro both ways and checks every answer.
fn interop<T: Record + PartialEq + std::fmt::Debug>(
    file: &str,
    records: &[T],
    bytes_fields: &[&str],
) {
    let codec = AvroCodec::new();
    let ours: Vec<Vec<u8>> = records
        .iter()
        .map(|r| codec.encode(r).expect("encode"))
        .collect();
    let job = json!({
        "schema_file": dir().join("../../schemas").join(file),
        "write": records.iter().map(|r| to_json(r, bytes_fields)).collect::<Vec<_>>(),
        "read": ours.iter().map(|b| hex(b)).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg(dir().join("tests/fastavro_interop.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(INSTALL_HINT);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write job");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "{file}: fastavro script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("script answers JSON");

    assert_eq!(answer["pcf"], parsing_canonical_form(T::schema()), "{file}");
    assert_eq!(
        answer["fingerprint"],
        hex(&fingerprint(T::schema())),
        "{file}"
    );
    assert_eq!(answer["fingerprint"], hex(&T::fingerprint()), "{file}");

    let written = answer["written"].as_array().expect("written");
    let read = answer["read"].as_array().expect("read");
    assert_eq!(written.len(), records.len());
    assert_eq!(read.len(), records.len());
    for (i, record) in records.iter().enumerate() {
        let theirs = unhex(written[i].as_str().expect("hex"));
        assert_eq!(
            codec
                .decode::<T>(&theirs)
                .expect("decode fastavro's payload"),
            *record,
            "{file} #{i}: fastavro wrote, we read"
        );
        assert_eq!(
            codec
                .decode_resolving::<T>(&theirs)
                .expect("decode fastavro's payload by resolution"),
            *record,
            "{file} #{i}: fastavro wrote, we read (resolving)"
        );
        assert_eq!(hex(&theirs), hex(&ours[i]), "{file} #{i}: same bytes");
        assert_eq!(
            read[i],
            to_json(record, bytes_fields),
            "{file} #{i}: we wrote, fastavro read"
        );
    }
}

fn envelope() -> Envelope {
    Envelope {
        event_id: "0b7f8c1e-3c59-4d8e-9d43-8f1c7f0a2a11".into(),
        tenant_id: "acme".into(),
        store_id: "s-001".into(),
        occurred_at: 1_700_000_000_123_456,
        received_at: -1,
        source: "interop".into(),
    }
}

#[test]
fn fastavro_reads_and_writes_every_topic_record() {
    require_fastavro();

    let sale = |lines: usize, original: Option<&str>| SaleTransaction {
        envelope: envelope(),
        kind: if original.is_some() {
            SaleKind::Refund
        } else {
            SaleKind::Sale
        },
        transaction_id: "t-1".into(),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: (0..lines)
            .map(|i| LineItem {
                sku: format!("sku-{i}"),
                quantity: 0.5 + i as f64,
                unit_price_minor: 199 - 100 * i as i64,
            })
            .collect(),
        total_minor: 1194,
        original_transaction_id: original.map(Into::into),
    };
    interop("pos_sale.avsc", &[sale(3, None), sale(0, Some("t-0"))], &[]);

    interop(
        "pos_inventory.avsc",
        &[None, Some(AdjustmentReason::CountCorrection)].map(|reason| InventoryChange {
            envelope: envelope(),
            kind: InventoryChangeKind::Adjustment,
            sku: "milk".into(),
            quantity: -3.25,
            reason,
        }),
        &[],
    );

    interop(
        "pos_device.avsc",
        &[None, Some("2.0.1")].map(|v| PosHeartbeat {
            envelope: envelope(),
            terminal_id: "pos-2".into(),
            app_up: true,
            printer: PrinterStatus::PaperLow,
            network: NetworkStatus::Offline,
            software_version: v.map(Into::into),
        }),
        &[],
    );

    interop(
        "sensor_reading.avsc",
        &[None, Some("freezer")].map(|a| SensorReading {
            envelope: envelope(),
            device_id: "t-9".into(),
            kind: SensorKind::Humidity,
            value: 41.5,
            unit: SensorUnit::Percent,
            appliance: a.map(Into::into),
        }),
        &[],
    );

    let all_bytes: Vec<u8> = (0..=255).collect();
    interop(
        "rejected_record.avsc",
        &[
            RejectedRecord {
                envelope: envelope(),
                reason: "not JSON".into(),
                field: None,
                original: all_bytes.into(),
                original_event_id: None,
                source_topic: None,
                source_partition: None,
                source_offset: None,
                original_length: None,
                original_sha256: None,
            },
            RejectedRecord {
                envelope: envelope(),
                reason: "negative quantity".into(),
                field: Some("lines[0].quantity".into()),
                original: b"{\"x\":1}".to_vec().into(),
                original_event_id: Some("e-1".into()),
                source_topic: Some("pos.sales.v1".into()),
                source_partition: Some(5),
                source_offset: Some(i64::MAX),
                original_length: Some(1),
                original_sha256: Some("00".repeat(32)),
            },
        ],
        &["original"],
    );

    // At most one label each: with more, entry order (and so the bytes) follows each
    // side's map iteration order.
    interop(
        "alert_transition.avsc",
        &[
            (HashMap::new(), None),
            (
                HashMap::from([("appliance".to_string(), "freezer".to_string())]),
                Some(-9.5),
            ),
        ]
        .map(|(labels, value)| AlertTransition {
            envelope: envelope(),
            alert_id: "a-1".into(),
            rule_id: "freezer-warm".into(),
            state: AlertState::Firing,
            severity: AlertSeverity::Critical,
            subject: "freezer-1".into(),
            summary: "warm".into(),
            value,
            started_at: 1_700_000_000_000_001,
            ended_at: value.map(|_| 1_700_000_000_000_002),
            rule_kind: value.map(|_| "threshold".to_string()),
            labels,
        }),
        &[],
    );

    interop(
        "demand_forecast.avsc",
        &[false, true].map(|some| DemandForecast {
            envelope: envelope(),
            sku: "milk".into(),
            method: "ets".into(),
            interval_level: 0.8,
            days: if some {
                vec![
                    ForecastDay {
                        date: 20_000,
                        mean: 10.5,
                        lower: 8.0,
                        upper: 13.0,
                        wide_lower: Some(6.5),
                        wide_upper: Some(15.0),
                    },
                    ForecastDay {
                        date: -1,
                        mean: 0.0,
                        lower: 0.0,
                        upper: 0.25,
                        wide_lower: None,
                        wide_upper: None,
                    },
                ]
            } else {
                vec![]
            },
            on_hand: some.then_some(12.0),
            days_of_cover: some.then_some(1.5),
            stock_out_probability: some.then_some(0.125),
            wide_interval_level: some.then_some(0.95),
            lead_time_days: some.then_some(7),
            backtest: some.then_some(ForecastBacktest {
                mase: 0.75,
                smape: 31.5,
                baseline_mase: Some(1.0),
                origins: 3,
                history_days: 365,
            }),
        }),
        &[],
    );

    interop(
        "notification_outcome.avsc",
        &[None, Some("HTTP 500")].map(|error| NotificationOutcome {
            envelope: envelope(),
            alert_id: "a-1".into(),
            alert_state: NotifiedState::Resolved,
            receiver: "ops".into(),
            channel: Channel::Email,
            status: DeliveryStatus::Failed,
            attempts: 4,
            error: error.map(Into::into),
        }),
        &[],
    );
}
