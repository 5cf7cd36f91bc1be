//! Typed records of every StorePulse topic.
//!
//! Each type mirrors one `.avsc` file in `schemas/` exactly: the schema the codec
//! writes with is the file (docs, defaults and logical types included), and the test
//! `records_match_schema_files` fails when the Rust shape and the file drift apart
//! (it compares Avro Parsing Canonical Forms).
//!
//! Timestamps are microseconds since the Unix epoch (`timestamp-micros`); money is
//! in minor currency units so sums are exact.

use std::collections::HashMap;

use apache_avro::{AvroSchema, Schema};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A record type bound to its schema file and topic.
pub trait Record: Serialize + DeserializeOwned + AvroSchema + Send + Sync + 'static {
    /// The `.avsc` text this type is written and read with.
    const SCHEMA_JSON: &'static str;
    /// Base topic name (before any configured prefix).
    const TOPIC: &'static str;
    /// The parsed schema of [`Record::SCHEMA_JSON`].
    fn schema() -> &'static Schema;
    /// Fingerprint of [`Record::schema`], computed once.
    fn fingerprint() -> [u8; 8];
    /// The envelope every record carries.
    fn envelope(&self) -> &Envelope;
}

macro_rules! record {
    ($ty:ty, $file:literal, $topic:expr) => {
        impl Record for $ty {
            const SCHEMA_JSON: &'static str = include_str!(concat!("../../../schemas/", $file));
            const TOPIC: &'static str = $topic;
            fn schema() -> &'static Schema {
                static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
                SCHEMA.get_or_init(|| {
                    Schema::parse_str(Self::SCHEMA_JSON).expect(concat!(
                        "bundled schema ",
                        $file,
                        " is valid Avro"
                    ))
                })
            }
            fn fingerprint() -> [u8; 8] {
                static FP: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
                *FP.get_or_init(|| crate::avro::fingerprint(Self::schema()))
            }
            fn envelope(&self) -> &Envelope {
                &self.envelope
            }
        }
    };
}

/// Topic names, without the deployment's prefix.
pub mod topic {
    pub const SALES: &str = "pos.sales.v1";
    pub const INVENTORY: &str = "pos.inventory.v1";
    pub const DEVICE: &str = "pos.device.v1";
    pub const SENSOR_READINGS: &str = "sensor.readings.v1";
    pub const REJECTED: &str = "ingest.rejected.v1";
    pub const ALERTS: &str = "alerts.v1";
    pub const FORECASTS: &str = "forecasts.v1";
    pub const NOTIFICATIONS: &str = "notifications.v1";
    /// The writer-schema registry (compacted, one partition); see
    /// [`crate::schema_registry`].
    pub const SCHEMAS: &str = "storepulse.schemas.v1";
    /// Every topic a deployment provisions: the record topics and the registry.
    pub const PROVISIONED: [&str; 9] = [
        SALES,
        INVENTORY,
        DEVICE,
        SENSOR_READINGS,
        REJECTED,
        ALERTS,
        FORECASTS,
        NOTIFICATIONS,
        SCHEMAS,
    ];
    /// Every record topic of the pipeline, in a stable order.
    pub const ALL: [&str; 8] = [
        SALES,
        INVENTORY,
        DEVICE,
        SENSOR_READINGS,
        REJECTED,
        ALERTS,
        FORECASTS,
        NOTIFICATIONS,
    ];
}

/// Identity, ownership and timing shared by every record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct Envelope {
    pub event_id: String,
    pub tenant_id: String,
    pub store_id: String,
    pub occurred_at: i64,
    pub received_at: i64,
    pub source: String,
}

impl Envelope {
    /// Partition key: `tenant_id/store_id`, so a store's events stay in order.
    pub fn partition_key(&self) -> String {
        store_key(&self.tenant_id, &self.store_id)
    }
}

/// The partition key of a store.
pub fn store_key(tenant_id: &str, store_id: &str) -> String {
    format!("{tenant_id}/{store_id}")
}

/// Microseconds since the epoch, as carried in records.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The instant a `timestamp-micros` value stands for.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// The day a `date` value (days since the epoch) stands for, if representable.
pub fn from_days(days: i32) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
        .checked_add_signed(chrono::TimeDelta::try_days(i64::from(days))?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum SaleKind {
    Sale,
    Refund,
    Void,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct LineItem {
    pub sku: String,
    pub quantity: f64,
    pub unit_price_minor: i64,
}

/// pos.sales.v1: a sale, refund or void with its line items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct SaleTransaction {
    pub envelope: Envelope,
    pub kind: SaleKind,
    pub transaction_id: String,
    pub terminal_id: String,
    pub currency: String,
    pub lines: Vec<LineItem>,
    pub total_minor: i64,
    pub original_transaction_id: Option<String>,
}
record!(SaleTransaction, "pos_sale.avsc", topic::SALES);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum InventoryChangeKind {
    Snapshot,
    Adjustment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum AdjustmentReason {
    Delivery,
    Shrink,
    CustomerReturn,
    CountCorrection,
    Transfer,
}

/// pos.inventory.v1: a stock snapshot or adjustment of one SKU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct InventoryChange {
    pub envelope: Envelope,
    pub kind: InventoryChangeKind,
    pub sku: String,
    pub quantity: f64,
    pub reason: Option<AdjustmentReason>,
}
record!(InventoryChange, "pos_inventory.avsc", topic::INVENTORY);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum PrinterStatus {
    Ok,
    PaperLow,
    PaperOut,
    Offline,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum NetworkStatus {
    Online,
    Degraded,
    Offline,
}

/// pos.device.v1: a POS terminal heartbeat with its health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct PosHeartbeat {
    pub envelope: Envelope,
    pub terminal_id: String,
    pub app_up: bool,
    pub printer: PrinterStatus,
    pub network: NetworkStatus,
    pub software_version: Option<String>,
}
record!(PosHeartbeat, "pos_device.avsc", topic::DEVICE);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum SensorKind {
    Temperature,
    Humidity,
    Door,
    Power,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum SensorUnit {
    Celsius,
    Percent,
    OpenClosed,
    OnOff,
}

impl SensorKind {
    /// The one unit a reading of this kind is expressed in.
    pub fn unit(self) -> SensorUnit {
        match self {
            SensorKind::Temperature => SensorUnit::Celsius,
            SensorKind::Humidity => SensorUnit::Percent,
            SensorKind::Door => SensorUnit::OpenClosed,
            SensorKind::Power => SensorUnit::OnOff,
        }
    }
}

/// sensor.readings.v1: one reading of an in-store sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct SensorReading {
    pub envelope: Envelope,
    pub device_id: String,
    pub kind: SensorKind,
    pub value: f64,
    pub unit: SensorUnit,
    pub appliance: Option<String>,
}
record!(SensorReading, "sensor_reading.avsc", topic::SENSOR_READINGS);

/// ingest.rejected.v1: input that failed decoding or validation, with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct RejectedRecord {
    pub envelope: Envelope,
    pub reason: String,
    pub field: Option<String>,
    pub original: AvroBytes,
    pub original_event_id: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub original_length: Option<i64>,
    pub original_sha256: Option<String>,
}
record!(RejectedRecord, "rejected_record.avsc", topic::REJECTED);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum AlertState {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum AlertSeverity {
    Info,
    Warning,
    Critical,
}

/// alerts.v1: an alert lifecycle transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct AlertTransition {
    pub envelope: Envelope,
    pub alert_id: String,
    pub rule_id: String,
    pub state: AlertState,
    pub severity: AlertSeverity,
    pub subject: String,
    pub summary: String,
    pub value: Option<f64>,
    pub started_at: i64,
    pub labels: HashMap<String, String>,
    /// Resolved only: event time the condition ended (added in v1.1).
    #[serde(default)]
    pub ended_at: Option<i64>,
    /// Kind of the rule that decided it (added in v1.1).
    #[serde(default)]
    pub rule_kind: Option<String>,
}
record!(AlertTransition, "alert_transition.avsc", topic::ALERTS);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct ForecastDay {
    /// Days since the Unix epoch (`date` logical type).
    pub date: i32,
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    /// Lower end of the wide interval (added in v1.1).
    #[serde(default)]
    pub wide_lower: Option<f64>,
    /// Upper end of the wide interval (added in v1.1).
    #[serde(default)]
    pub wide_upper: Option<f64>,
}

/// Rolling-origin backtest of a forecast's method (added in v1.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct ForecastBacktest {
    pub mase: f64,
    pub smape: f64,
    #[serde(default)]
    pub baseline_mase: Option<f64>,
    pub origins: i32,
    pub history_days: i32,
}

/// forecasts.v1: demand forecast of one SKU in one store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct DemandForecast {
    pub envelope: Envelope,
    pub sku: String,
    pub method: String,
    pub interval_level: f64,
    pub days: Vec<ForecastDay>,
    pub on_hand: Option<f64>,
    pub days_of_cover: Option<f64>,
    pub stock_out_probability: Option<f64>,
    /// Coverage of the days' `wide_lower..wide_upper` (added in v1.1).
    #[serde(default)]
    pub wide_interval_level: Option<f64>,
    /// Days `stock_out_probability` looks ahead (added in v1.1).
    #[serde(default)]
    pub lead_time_days: Option<i32>,
    /// How the method scored on the series' history (added in v1.1).
    #[serde(default)]
    pub backtest: Option<ForecastBacktest>,
}
record!(DemandForecast, "demand_forecast.avsc", topic::FORECASTS);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum NotifiedState {
    Firing,
    Resolved,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum Channel {
    Webhook,
    WhatsApp,
    Email,
    Slack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub enum DeliveryStatus {
    Delivered,
    Failed,
    Suppressed,
}

/// notifications.v1: delivery outcome of one alert transition to one receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "storepulse.v1")]
pub struct NotificationOutcome {
    pub envelope: Envelope,
    pub alert_id: String,
    pub alert_state: NotifiedState,
    pub receiver: String,
    pub channel: Channel,
    pub status: DeliveryStatus,
    pub attempts: i32,
    pub error: Option<String>,
}
record!(
    NotificationOutcome,
    "notification_outcome.avsc",
    topic::NOTIFICATIONS
);

/// Avro `bytes` (the derive would make a `Vec<u8>` an array of ints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AvroBytes(#[serde(with = "apache_avro::serde_avro_bytes")] pub Vec<u8>);

impl apache_avro::schema::derive::AvroSchemaComponent for AvroBytes {
    fn get_schema_in_ctxt(
        _named: &mut HashMap<apache_avro::schema::Name, Schema>,
        _namespace: &apache_avro::schema::Namespace,
    ) -> Schema {
        Schema::Bytes
    }
}

impl From<Vec<u8>> for AvroBytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

/// Earlier versions of the bundled schemas (`schemas/history/`): never written by
/// this build, still read, since records written with them remain on the topics.
pub fn historical_schemas() -> Vec<Schema> {
    [
        include_str!("../../../schemas/history/rejected_record.v1.0.avsc"),
        include_str!("../../../schemas/history/alert_transition.v1.0.avsc"),
        include_str!("../../../schemas/history/demand_forecast.v1.0.avsc"),
    ]
    .iter()
    .filter_map(|text| Schema::parse_str(text).ok())
    .collect()
}

/// Reader schemas of every bundled record type, for the codec's registry.
pub fn bundled_schemas() -> Vec<&'static Schema> {
    vec![
        SaleTransaction::schema(),
        InventoryChange::schema(),
        PosHeartbeat::schema(),
        SensorReading::schema(),
        RejectedRecord::schema(),
        AlertTransition::schema(),
        DemandForecast::schema(),
        NotificationOutcome::schema(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parsing Canonical Form rule [PRIMITIVES]: `{"type":"long"}` is `"long"`.
    /// apache-avro keeps the object form where a logical type was stripped.
    fn collapse_primitives(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Object(m) if m.len() == 1 && m.get("type").is_some_and(Value::is_string) => {
                m.get("type").cloned().unwrap_or(Value::Null)
            }
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k, collapse_primitives(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(collapse_primitives).collect()),
            other => other,
        }
    }

    fn pcf(schema: &Schema) -> String {
        let v: serde_json::Value =
            serde_json::from_str(&schema.canonical_form()).expect("canonical form is JSON");
        collapse_primitives(v).to_string()
    }

    fn assert_matches<T: Record>() {
        let from_file = pcf(T::schema());
        let from_type = pcf(&T::get_schema());
        assert_eq!(
            from_file,
            from_type,
            "{} drifted from its .avsc ({})",
            std::any::type_name::<T>(),
            T::TOPIC
        );
    }

    #[test]
    fn records_match_schema_files() {
        assert_matches::<SaleTransaction>();
        assert_matches::<InventoryChange>();
        assert_matches::<PosHeartbeat>();
        assert_matches::<SensorReading>();
        assert_matches::<RejectedRecord>();
        assert_matches::<AlertTransition>();
        assert_matches::<DemandForecast>();
        assert_matches::<NotificationOutcome>();
    }

    #[test]
    fn every_topic_has_a_schema_file() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let files = std::fs::read_dir(&dir)
            .expect("schemas dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "avsc"))
            .count();
        assert_eq!(files, topic::ALL.len(), "one .avsc per topic record type");
        assert_eq!(bundled_schemas().len(), topic::ALL.len());
    }
}
