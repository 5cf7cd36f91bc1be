//! Avro single-object encoding with schema resolution.
//!
//! Every payload on a StorePulse topic is `C3 01` + the 8-byte CRC-64-AVRO (Rabin)
//! fingerprint of the writer schema (little endian) + the Avro binary datum. The
//! [`AvroCodec`] keeps a registry of known writer schemas by fingerprint.
//!
//! What this module guarantees:
//!
//! - **Spec-true fingerprints.** The header fingerprint is CRC-64-AVRO of the
//!   specification's Parsing Canonical Form ([`parsing_canonical_form`]), so it is the
//!   one Java's `SchemaNormalization` and Python's fastavro compute for the same
//!   `.avsc`. apache-avro's own canonical form keeps logical-typed primitives as
//!   `{"type":"long"}` (AVRO-4004) and `order`/`precision`/`scale`; we normalise that
//!   away before hashing.
//! - **One-release alias.** Every registered schema is also found under its
//!   [`legacy_fingerprint`] (the apache-avro computation StorePulse wrote until this
//!   release), so records already on the topics still decode. Remove the alias one
//!   release after the spec fingerprints shipped (docs/decisions/0003).
//! - **Resolution.** A record written with another (older, compatible) schema is
//!   resolved against the reader's schema (the [`Record`] type's file) with Avro schema
//!   resolution; apache-avro's own single-object readers skip that step.
//! - **Fast paths, same bytes.** [`AvroCodec::encode`] serialises the record straight
//!   into the buffer (apache-avro's `write_avro_datum_ref`), byte-identical to the
//!   `to_value` → `resolve` → `to_avro_datum` path it replaced. [`AvroCodec::decode`]
//!   deserialises straight from the bytes with `serde_avro_fast` when the writer
//!   schema *is* the reader schema (same spec fingerprint), and takes the resolving
//!   path otherwise (docs/decisions/0004).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::rabin::Rabin;
use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};
use serde::Serialize;
use serde_json::Value as Json;

use crate::records::{Record, bundled_schemas, historical_schemas};

/// The two marker bytes that open a single-object encoded datum.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// The 8-byte fingerprint that names a writer schema in the header, as on the wire
/// (the little-endian bytes of the CRC-64-AVRO value).
pub type Fingerprint = [u8; 8];

/// Why a payload could not be encoded or decoded. Decode errors are poison: the
/// record goes to the dead-letter topic with this as its reason.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("payload is not Avro single-object encoded (no C3 01 header, {len} bytes)")]
    NotSingleObject { len: usize },
    #[error("unknown writer schema fingerprint {0}; register the schema or upgrade this service")]
    UnknownWriterSchema(String),
    #[error(
        "cannot read the datum as {reader} written with {writer} (truncated, corrupt, or an incompatible schema): {source}"
    )]
    Resolution {
        writer: String,
        reader: String,
        #[source]
        source: Box<apache_avro::Error>,
    },
    #[error("avro: {0}")]
    Avro(#[from] Box<apache_avro::Error>),
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        CodecError::Avro(Box::new(e))
    }
}

/// A known writer schema.
#[derive(Debug)]
struct WriterEntry {
    schema: Arc<Schema>,
    /// Spec fingerprint of `schema` (also when the entry was found by its legacy one).
    fingerprint: Fingerprint,
    /// `schema` compiled for `serde_avro_fast`; `None` if that crate cannot take it,
    /// in which case every decode takes the resolving path.
    fast: Option<serde_avro_fast::Schema>,
}

/// Encoder/decoder for single-object Avro with a registry of writer schemas.
///
/// Cheap to clone; clones share the registry.
#[derive(Debug, Clone)]
pub struct AvroCodec {
    /// Known writer schemas, by fingerprint: every bundled schema, plus any older
    /// version registered with [`AvroCodec::register`]; each under its spec fingerprint
    /// and (for one release) its legacy one.
    writers: Arc<RwLock<HashMap<Fingerprint, Arc<WriterEntry>>>>,
}

impl Default for AvroCodec {
    fn default() -> Self {
        Self::new()
    }
}

/// CRC-64-AVRO of the empty input; also the polynomial the table is built from
/// (Avro specification, "Schema Fingerprints").
const CRC64_AVRO_EMPTY: u64 = 0xc15d_213a_a4d7_a795;

const CRC64_AVRO_TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & 0u64.wrapping_sub(fp & 1));
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

/// The 64-bit Rabin fingerprint (CRC-64-AVRO) of `bytes`, per the Avro specification.
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    bytes.iter().fold(CRC64_AVRO_EMPTY, |fp, &b| {
        (fp >> 8) ^ CRC64_AVRO_TABLE[((fp ^ u64::from(b)) & 0xff) as usize]
    })
}

/// The specification's Parsing Canonical Form of `schema`.
///
/// Built from apache-avro's canonical form, which already applies [FULLNAMES],
/// [ORDER], [STRINGS] and [INTEGERS] and strips `doc`, `aliases`, `default` and
/// `logicalType`, but keeps what [STRIP] removes and [PRIMITIVES] collapses. This
/// normaliser keeps only `name`, `type`, `fields`, `symbols`, `items`, `values` and
/// `size` (in that order), collapses any schema object whose `type` is a primitive
/// (`{"type":"long"}` left over from a `timestamp-micros`, a `decimal` on `bytes`) to
/// the bare name, and keeps fields to `name` and `type` (dropping `order`).
pub fn parsing_canonical_form(schema: &Schema) -> String {
    let canonical = schema.canonical_form();
    match serde_json::from_str::<Json>(&canonical) {
        Ok(json) => {
            let mut out = String::with_capacity(canonical.len());
            pcf_schema(&json, &mut out);
            out
        }
        // apache-avro always emits JSON here; should it ever not, hashing its form
        // is the best remaining answer.
        Err(_) => canonical,
    }
}

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

/// Attributes a non-primitive schema keeps in Parsing Canonical Form, in order.
const PCF_KEYS: [&str; 7] = [
    "name", "type", "fields", "symbols", "items", "values", "size",
];

fn pcf_schema(json: &Json, out: &mut String) {
    match json {
        Json::String(s) => pcf_string(s, out),
        Json::Array(branches) => pcf_list(branches, out, pcf_schema),
        Json::Object(map) => match map.get("type") {
            Some(Json::String(t)) if PRIMITIVES.contains(&t.as_str()) => pcf_string(t, out),
            // `{"type": <schema>}` is that schema.
            Some(inner @ (Json::Object(_) | Json::Array(_))) => pcf_schema(inner, out),
            _ => {
                out.push('{');
                let mut first = true;
                for key in PCF_KEYS {
                    let Some(value) = map.get(key) else { continue };
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    pcf_string(key, out);
                    out.push(':');
                    match key {
                        "fields" => match value {
                            Json::Array(fields) => pcf_list(fields, out, pcf_field),
                            other => out.push_str(&other.to_string()),
                        },
                        "type" | "items" | "values" => pcf_schema(value, out),
                        // name and symbols are strings, size an integer.
                        _ => out.push_str(&value.to_string()),
                    }
                }
                out.push('}');
            }
        },
        other => out.push_str(&other.to_string()),
    }
}

fn pcf_field(json: &Json, out: &mut String) {
    out.push('{');
    if let Some(name) = json.get("name") {
        pcf_string("name", out);
        out.push(':');
        out.push_str(&name.to_string());
        out.push(',');
    }
    pcf_string("type", out);
    out.push(':');
    pcf_schema(json.get("type").unwrap_or(&Json::Null), out);
    out.push('}');
}

fn pcf_list(items: &[Json], out: &mut String, each: fn(&Json, &mut String)) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        each(item, out);
    }
    out.push(']');
}

fn pcf_string(s: &str, out: &mut String) {
    // Avro names and symbols need no escaping; [STRINGS] wants none.
    out.push('"');
    out.push_str(s);
    out.push('"');
}

/// Fingerprint of a schema, as written in the single-object header: CRC-64-AVRO of
/// its [`parsing_canonical_form`], little endian. Matches Java and fastavro.
pub fn fingerprint(schema: &Schema) -> Fingerprint {
    crc64_avro(parsing_canonical_form(schema).as_bytes()).to_le_bytes()
}

/// The fingerprint StorePulse wrote before spec-true fingerprints: CRC-64-AVRO of
/// apache-avro's canonical form (which differs from the spec's for schemas with
/// logical types, AVRO-4004).
///
/// Only used to keep reading records written by the previous release. **Remove one
/// release after spec fingerprints shipped**, together with the alias registration in
/// [`AvroCodec::register`] (docs/decisions/0003).
pub fn legacy_fingerprint(schema: &Schema) -> Fingerprint {
    let fp = schema.fingerprint::<Rabin>();
    let mut out = [0u8; 8];
    out.copy_from_slice(&fp.bytes[..8]);
    out
}

fn schema_name(schema: &Schema) -> String {
    match schema.name() {
        Some(n) => n.fullname(None),
        None => "<anonymous>".to_string(),
    }
}

impl AvroCodec {
    /// A codec that knows every schema bundled in `schemas/`.
    pub fn new() -> Self {
        let codec = Self {
            writers: Arc::new(RwLock::new(HashMap::new())),
        };
        for schema in bundled_schemas() {
            codec.register(schema.clone());
        }
        for schema in historical_schemas() {
            codec.register(schema);
        }
        codec
    }

    /// Makes `schema` known as a writer schema (e.g. an older version of a record) and
    /// returns its (spec) fingerprint.
    ///
    /// The schema is also registered under its [`legacy_fingerprint`] so payloads
    /// written by the previous release still decode. That alias is removable one
    /// release after spec fingerprints shipped (docs/decisions/0003).
    pub fn register(&self, schema: Schema) -> Fingerprint {
        let fp = fingerprint(&schema);
        let legacy = legacy_fingerprint(&schema);
        let fast = serde_json::to_string(&schema)
            .ok()
            .and_then(|json| json.parse::<serde_avro_fast::Schema>().ok());
        let entry = Arc::new(WriterEntry {
            schema: Arc::new(schema),
            fingerprint: fp,
            fast,
        });
        let mut writers = self.writers.write().unwrap_or_else(|e| e.into_inner());
        writers.insert(legacy, Arc::clone(&entry));
        writers.insert(fp, entry);
        fp
    }

    /// Whether `fp` names a writer schema this codec can read.
    pub fn knows(&self, fp: &Fingerprint) -> bool {
        self.writers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(fp)
    }

    /// Encodes `record` with its current schema.
    ///
    /// Serialises straight into the output (no intermediate `Value`); the bytes equal
    /// those of [`AvroCodec::encode_with`]`(T::schema(), record)`. Should the direct
    /// serialiser refuse the record, the resolving path is used instead.
    pub fn encode<T: Record>(&self, record: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
        out.extend_from_slice(&T::fingerprint());
        match apache_avro::write_avro_datum_ref(T::schema(), record, &mut out) {
            Ok(_) => Ok(out),
            Err(_) => encode_datum(T::schema(), T::fingerprint(), record),
        }
    }

    /// Encodes any serializable value with an explicit writer schema (e.g. an older
    /// version, in tests of schema evolution).
    ///
    /// Takes the `to_value` → `resolve` → `to_avro_datum` path, which matches enum
    /// symbols and fields by name, so it is safe for any schema/type pairing (the
    /// direct serialiser of [`AvroCodec::encode`] writes enum variants by index).
    pub fn encode_with<T: Serialize>(schema: &Schema, record: &T) -> Result<Vec<u8>, CodecError> {
        encode_datum(schema, fingerprint(schema), record)
    }

    fn entry(&self, payload: &[u8]) -> Result<Arc<WriterEntry>, CodecError> {
        if payload.len() < HEADER_LEN || payload[..2] != SINGLE_OBJECT_MAGIC {
            return Err(CodecError::NotSingleObject { len: payload.len() });
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&payload[2..HEADER_LEN]);
        self.writers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fp)
            .cloned()
            .ok_or_else(|| CodecError::UnknownWriterSchema(hex_string(&fp)))
    }

    /// The writer schema a payload names in its header.
    pub fn writer_schema(&self, payload: &[u8]) -> Result<Arc<Schema>, CodecError> {
        Ok(Arc::clone(&self.entry(payload)?.schema))
    }

    /// Decodes a payload into `T`, resolving the writer schema to `T`'s schema.
    ///
    /// When the writer schema is `T`'s own (same spec fingerprint, whichever
    /// fingerprint the header carries) the datum is deserialised directly; otherwise,
    /// or if that fails, it goes through Avro schema resolution, whose error is the
    /// one reported.
    pub fn decode<T: Record>(&self, payload: &[u8]) -> Result<T, CodecError> {
        let entry = self.entry(payload)?;
        let body = &payload[HEADER_LEN..];
        if entry.fingerprint == T::fingerprint()
            && let Some(fast) = &entry.fast
            && let Ok(record) = serde_avro_fast::from_datum_slice::<T>(body, fast)
        {
            return Ok(record);
        }
        decode_resolving(&entry.schema, body)
    }

    /// Decodes a payload into `T` always through Avro schema resolution, even when the
    /// writer schema is `T`'s own (the path [`AvroCodec::decode`] falls back to; for
    /// tests and benchmarks).
    pub fn decode_resolving<T: Record>(&self, payload: &[u8]) -> Result<T, CodecError> {
        let entry = self.entry(payload)?;
        decode_resolving(&entry.schema, &payload[HEADER_LEN..])
    }
}

fn decode_resolving<T: Record>(writer: &Schema, mut body: &[u8]) -> Result<T, CodecError> {
    let reader = T::schema();
    let value =
        from_avro_datum(writer, &mut body, Some(reader)).map_err(|e| CodecError::Resolution {
            writer: schema_name(writer),
            reader: schema_name(reader),
            source: Box::new(e),
        })?;
    Ok(from_value::<T>(&value)?)
}

/// The resolving encoder: `to_value` → `resolve` → `to_avro_datum`.
fn encode_datum<T: Serialize>(
    schema: &Schema,
    fp: Fingerprint,
    record: &T,
) -> Result<Vec<u8>, CodecError> {
    let value = to_value(record)?.resolve(schema)?;
    let body = to_avro_datum(schema, value)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
    out.extend_from_slice(&fp);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The fingerprint a hex string (as in [`CodecError::UnknownWriterSchema`]) names.
pub fn parse_fingerprint_hex(hex: &str) -> Option<Fingerprint> {
    if hex.len() != 16 {
        return None;
    }
    let mut fp = [0u8; 8];
    for (i, byte) in fp.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(fp)
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;

    fn envelope() -> Envelope {
        Envelope {
            event_id: "0b7f8c1e-3c59-4d8e-9d43-8f1c7f0a2a11".into(),
            tenant_id: "acme".into(),
            store_id: "s-001".into(),
            occurred_at: 1_700_000_000_000_000,
            received_at: 1_700_000_000_500_000,
            source: "test".into(),
        }
    }

    #[test]
    fn round_trips_every_shape() {
        let codec = AvroCodec::new();
        let sale = SaleTransaction {
            envelope: envelope(),
            kind: SaleKind::Refund,
            transaction_id: "t-1".into(),
            terminal_id: "pos-1".into(),
            currency: "EUR".into(),
            lines: vec![LineItem {
                sku: "milk".into(),
                quantity: 2.0,
                unit_price_minor: 129,
            }],
            total_minor: 258,
            original_transaction_id: Some("t-0".into()),
        };
        let bytes = codec.encode(&sale).expect("encode");
        assert_eq!(bytes[..2], SINGLE_OBJECT_MAGIC);
        assert_eq!(
            codec.decode::<SaleTransaction>(&bytes).expect("decode"),
            sale
        );

        let inv = InventoryChange {
            envelope: envelope(),
            kind: InventoryChangeKind::Adjustment,
            sku: "milk".into(),
            quantity: -3.0,
            reason: Some(AdjustmentReason::Shrink),
        };
        let bytes = codec.encode(&inv).expect("encode");
        assert_eq!(
            codec.decode::<InventoryChange>(&bytes).expect("decode"),
            inv
        );

        let rejected = RejectedRecord {
            envelope: envelope(),
            reason: "bad".into(),
            field: None,
            original: b"{\"x\":1}".to_vec().into(),
            original_event_id: None,
            source_topic: Some("pos.sales.v1".into()),
            source_partition: Some(3),
            source_offset: Some(42),
            original_length: Some(7),
            original_sha256: None,
        };
        let bytes = codec.encode(&rejected).expect("encode");
        assert_eq!(
            codec.decode::<RejectedRecord>(&bytes).expect("decode"),
            rejected
        );

        let mut labels = HashMap::new();
        labels.insert("appliance".to_string(), "freezer".to_string());
        let alert = AlertTransition {
            envelope: envelope(),
            alert_id: "a".into(),
            rule_id: "freezer-warm".into(),
            state: AlertState::Firing,
            severity: AlertSeverity::Critical,
            subject: "freezer-1".into(),
            summary: "warm".into(),
            value: Some(-9.5),
            started_at: 1,
            labels,
            ended_at: Some(2),
            rule_kind: Some("threshold".into()),
        };
        let bytes = codec.encode(&alert).expect("encode");
        assert_eq!(
            codec.decode::<AlertTransition>(&bytes).expect("decode"),
            alert
        );
    }

    /// Version 0 of `sensor_reading.avsc`: no `appliance` field.
    const SENSOR_V0: &str = r#"{"type":"record","name":"SensorReading","namespace":"storepulse.v1","fields":[
              {"name":"envelope","type":{"type":"record","name":"Envelope","fields":[
                {"name":"event_id","type":"string"},{"name":"tenant_id","type":"string"},
                {"name":"store_id","type":"string"},
                {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-micros"}},
                {"name":"received_at","type":{"type":"long","logicalType":"timestamp-micros"}},
                {"name":"source","type":"string"}]}},
              {"name":"device_id","type":"string"},
              {"name":"kind","type":{"type":"enum","name":"SensorKind","symbols":["Temperature","Humidity","Door","Power"]}},
              {"name":"value","type":"double"},
              {"name":"unit","type":{"type":"enum","name":"SensorUnit","symbols":["Celsius","Percent","OpenClosed","OnOff"]}}]}"#;

    #[derive(Serialize)]
    struct SensorReadingV0 {
        envelope: Envelope,
        device_id: String,
        kind: SensorKind,
        value: f64,
        unit: SensorUnit,
    }

    fn sensor_v0() -> SensorReadingV0 {
        SensorReadingV0 {
            envelope: envelope(),
            device_id: "freezer-1".into(),
            kind: SensorKind::Temperature,
            value: -18.5,
            unit: SensorUnit::Celsius,
        }
    }

    /// Version 0 of sensor readings had no `appliance` field. A payload written with it
    /// must read with today's schema, the new field taking its default.
    #[test]
    fn older_writer_schema_resolves_to_current_reader() {
        let v0 = Schema::parse_str(SENSOR_V0).expect("v0 schema");
        let old = sensor_v0();
        let bytes = AvroCodec::encode_with(&v0, &old).expect("encode v0");

        let codec = AvroCodec::new();
        let err = codec
            .decode::<SensorReading>(&bytes)
            .expect_err("v0 not registered yet");
        assert!(matches!(err, CodecError::UnknownWriterSchema(_)), "{err}");

        codec.register(v0);
        let read = codec
            .decode::<SensorReading>(&bytes)
            .expect("resolve v0 -> v1");
        assert_eq!(read.device_id, "freezer-1");
        assert_eq!(read.value, -18.5);
        assert_eq!(read.appliance, None, "new field takes its default");
    }

    /// Alerts written before v1.1 (no `ended_at`, `rule_kind`) read with today's
    /// schema: the bundled history registers v1.0, the new fields take their defaults.
    #[test]
    fn alert_transition_v1_0_resolves_to_current_reader() {
        #[derive(Serialize)]
        struct AlertV1_0 {
            envelope: Envelope,
            alert_id: String,
            rule_id: String,
            state: AlertState,
            severity: AlertSeverity,
            subject: String,
            summary: String,
            value: Option<f64>,
            started_at: i64,
            labels: HashMap<String, String>,
        }
        let v1_0 = Schema::parse_str(include_str!(
            "../../../schemas/history/alert_transition.v1.0.avsc"
        ))
        .expect("v1.0 schema");
        let old = AlertV1_0 {
            envelope: envelope(),
            alert_id: "a".into(),
            rule_id: "freezer-warm".into(),
            state: AlertState::Resolved,
            severity: AlertSeverity::Critical,
            subject: "freezer-1".into(),
            summary: "warm".into(),
            value: Some(-9.5),
            started_at: 7,
            labels: HashMap::new(),
        };
        let bytes = AvroCodec::encode_with(&v1_0, &old).expect("encode v1.0");
        let read = AvroCodec::new()
            .decode::<AlertTransition>(&bytes)
            .expect("v1.0 is bundled history");
        assert_eq!(read.alert_id, "a");
        assert_eq!(read.started_at, 7);
        assert_eq!(read.ended_at, None);
        assert_eq!(read.rule_kind, None);
    }

    /// Forecasts written before v1.1 (no wide interval, lead time, backtest) read with
    /// today's schema: the rules' stock rule keeps reading a forecaster not yet
    /// upgraded.
    #[test]
    fn demand_forecast_v1_0_resolves_to_current_reader() {
        #[derive(Serialize)]
        struct DayV1_0 {
            date: i32,
            mean: f64,
            lower: f64,
            upper: f64,
        }
        #[derive(Serialize)]
        struct ForecastV1_0 {
            envelope: Envelope,
            sku: String,
            method: String,
            interval_level: f64,
            days: Vec<DayV1_0>,
            on_hand: Option<f64>,
            days_of_cover: Option<f64>,
            stock_out_probability: Option<f64>,
        }
        let v1_0 = Schema::parse_str(include_str!(
            "../../../schemas/history/demand_forecast.v1.0.avsc"
        ))
        .expect("v1.0 schema");
        let old = ForecastV1_0 {
            envelope: envelope(),
            sku: "sku-1".into(),
            method: "holt-winters".into(),
            interval_level: 0.8,
            days: vec![DayV1_0 {
                date: 20_425,
                mean: 4.5,
                lower: 2.0,
                upper: 7.0,
            }],
            on_hand: Some(12.0),
            days_of_cover: Some(2.7),
            stock_out_probability: None,
        };
        let bytes = AvroCodec::encode_with(&v1_0, &old).expect("encode v1.0");
        let read = AvroCodec::new()
            .decode::<DemandForecast>(&bytes)
            .expect("v1.0 is bundled history");
        assert_eq!(
            (read.sku.as_str(), read.days_of_cover),
            ("sku-1", Some(2.7))
        );
        assert_eq!(read.days.len(), 1);
        assert_eq!((read.days[0].date, read.days[0].mean), (20_425, 4.5));
        assert_eq!(read.days[0].wide_lower, None);
        assert_eq!(
            (read.wide_interval_level, read.lead_time_days),
            (None, None)
        );
        assert!(read.backtest.is_none());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let codec = AvroCodec::new();
        let err = codec
            .decode::<SensorReading>(b"{\"json\":true}")
            .expect_err("not avro");
        assert!(matches!(err, CodecError::NotSingleObject { .. }));
        let mut bytes = codec
            .encode(&PosHeartbeat {
                envelope: envelope(),
                terminal_id: "pos-1".into(),
                app_up: true,
                printer: PrinterStatus::Ok,
                network: NetworkStatus::Online,
                software_version: None,
            })
            .expect("encode");
        bytes.truncate(14);
        assert!(codec.decode::<PosHeartbeat>(&bytes).is_err());
        // A valid payload of another record type does not resolve to this one.
        let other = codec
            .encode(&InventoryChange {
                envelope: envelope(),
                kind: InventoryChangeKind::Snapshot,
                sku: "x".into(),
                quantity: 1.0,
                reason: None,
            })
            .expect("encode");
        assert!(codec.decode::<PosHeartbeat>(&other).is_err());
    }

    /// Header bytes (wire order) that Java's `SchemaNormalization` and fastavro compute
    /// for today's `.avsc` files.
    #[test]
    fn header_fingerprints_match_java_and_fastavro() {
        fn wire<T: Record>() -> String {
            hex_string(&T::fingerprint())
        }
        assert_eq!(wire::<SaleTransaction>(), "21154f6aa69246fa");
        assert_eq!(wire::<SensorReading>(), "0cfa10d1e430bd1f");
        assert_eq!(wire::<InventoryChange>(), "d4671117db32536d");
        assert_eq!(wire::<PosHeartbeat>(), "87b1a3cfbfe44406");
        // 0.2 added original_length/original_sha256; fastavro computes 249df994bc33d87e
        // for the new file and b9b4440e7605838f for schemas/history/rejected_record.v1.0.avsc.
        assert_eq!(wire::<RejectedRecord>(), "249df994bc33d87e");
        let v1_0 = historical_schemas();
        assert_eq!(hex_string(&fingerprint(&v1_0[0])), "b9b4440e7605838f");
        // 1.1 added ended_at/rule_kind; fastavro computes 7c028058e15ed3a8 for the
        // new file and 810fdda769e9af60 for schemas/history/alert_transition.v1.0.avsc.
        assert_eq!(wire::<AlertTransition>(), "7c028058e15ed3a8");
        assert_eq!(hex_string(&fingerprint(&v1_0[1])), "810fdda769e9af60");
        // 1.1 added wide intervals, lead_time_days and backtest; fastavro computes
        // c0b769dd7c9c1f26 for the new file and ccf0055463cd4699 for schemas/history/demand_forecast.v1.0.avsc.
        assert_eq!(wire::<DemandForecast>(), "c0b769dd7c9c1f26");
        assert_eq!(hex_string(&fingerprint(&v1_0[2])), "ccf0055463cd4699");
        assert_eq!(wire::<NotificationOutcome>(), "39496ea048fe0913");

        let bytes = AvroCodec::new().encode(&sale(3)).expect("encode");
        assert_eq!(hex_string(&bytes[..HEADER_LEN]), "c30121154f6aa69246fa");
    }

    #[test]
    fn crc64_avro_matches_the_spec_and_apache_rabin() {
        assert_eq!(crc64_avro(b""), 0xc15d_213a_a4d7_a795);
        // apache-avro's documented example.
        assert_eq!(
            hex_string(&crc64_avro(b"hello world").to_le_bytes()),
            "60335ba6d0415528"
        );
        // Over the same input our CRC equals apache-avro's Rabin digest.
        for schema in bundled_schemas() {
            assert_eq!(
                crc64_avro(schema.canonical_form().as_bytes()).to_le_bytes(),
                legacy_fingerprint(schema),
                "{}",
                schema_name(schema)
            );
        }
    }

    /// Every rule apache-avro's canonical form misses, against fastavro's
    /// `to_parsing_canonical_form` and `fingerprint` of the same schema.
    #[test]
    fn pcf_strips_and_collapses_what_the_spec_says() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"T","namespace":"ns.a","doc":"d","aliases":["X"],"fields":[
             {"name":"ts","type":{"type":"long","logicalType":"timestamp-micros"},"doc":"x"},
             {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
             {"name":"fx","type":{"type":"fixed","name":"Money","size":8,"logicalType":"decimal","precision":12,"scale":3}},
             {"name":"id","type":{"type":"string","logicalType":"uuid"},"order":"descending"},
             {"name":"day","type":{"type":"int","logicalType":"date"},"default":0},
             {"name":"other","type":"Money"},
             {"name":"e","type":{"type":"enum","name":"E","namespace":"ns.b","symbols":["A","B"],"default":"A"}},
             {"name":"m","type":{"type":"map","values":{"type":"array","items":"ns.b.E"}}},
             {"name":"u","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null}]}"#,
        )
        .expect("schema");
        assert_eq!(
            parsing_canonical_form(&schema),
            concat!(
                r#"{"name":"ns.a.T","type":"record","fields":[{"name":"ts","type":"long"},"#,
                r#"{"name":"amount","type":"bytes"},"#,
                r#"{"name":"fx","type":{"name":"ns.a.Money","type":"fixed","size":8}},"#,
                r#"{"name":"id","type":"string"},{"name":"day","type":"int"},"#,
                r#"{"name":"other","type":"ns.a.Money"},"#,
                r#"{"name":"e","type":{"name":"ns.b.E","type":"enum","symbols":["A","B"]}},"#,
                r#"{"name":"m","type":{"type":"map","values":{"type":"array","items":"ns.b.E"}}},"#,
                r#"{"name":"u","type":["null","long"]}]}"#
            )
        );
        assert_eq!(hex_string(&fingerprint(&schema)), "b51e47059b61274c");
        assert_ne!(fingerprint(&schema), legacy_fingerprint(&schema));
    }

    /// Records written by the previous release carry the legacy fingerprint; they must
    /// keep decoding for one release.
    #[test]
    fn legacy_header_still_decodes() {
        let codec = AvroCodec::new();
        let record = sale(2);
        let legacy = legacy_fingerprint(SaleTransaction::schema());
        assert_ne!(
            legacy,
            SaleTransaction::fingerprint(),
            "logical types differ"
        );
        let mut bytes = codec.encode(&record).expect("encode");
        bytes[2..HEADER_LEN].copy_from_slice(&legacy);
        assert_eq!(
            codec
                .writer_schema(&bytes)
                .expect("legacy header known")
                .as_ref(),
            SaleTransaction::schema()
        );
        assert_eq!(decode_fast_only::<SaleTransaction>(&codec, &bytes), record);
        assert_eq!(
            codec.decode::<SaleTransaction>(&bytes).expect("decode"),
            record
        );
        assert_eq!(
            codec
                .decode_resolving::<SaleTransaction>(&bytes)
                .expect("decode resolving"),
            record
        );
        // A registered older schema is aliased too.
        let v0 = Schema::parse_str(SENSOR_V0).expect("v0 schema");
        let fp = codec.register(v0.clone());
        assert_eq!(fp, fingerprint(&v0));
        let mut old = AvroCodec::encode_with(&v0, &sensor_v0()).expect("encode v0");
        old[2..HEADER_LEN].copy_from_slice(&legacy_fingerprint(&v0));
        let read = codec
            .decode::<SensorReading>(&old)
            .expect("legacy v0 -> v1");
        assert_eq!(read.device_id, "freezer-1");
    }

    /// The fast path only, failing if `decode` would have had to fall back.
    fn decode_fast_only<T: Record>(codec: &AvroCodec, payload: &[u8]) -> T {
        let entry = codec.entry(payload).expect("known writer");
        assert_eq!(entry.fingerprint, T::fingerprint(), "writer is the reader");
        let fast = entry
            .fast
            .as_ref()
            .expect("serde_avro_fast takes the schema");
        serde_avro_fast::from_datum_slice(&payload[HEADER_LEN..], fast).expect("fast decode")
    }

    /// Fast encode == resolving encode, byte for byte; both decoders give the record back.
    fn check_both_paths<T: Record + PartialEq + std::fmt::Debug>(codec: &AvroCodec, record: &T) {
        let what = std::any::type_name::<T>();
        let mut direct = Vec::new();
        apache_avro::write_avro_datum_ref(T::schema(), record, &mut direct)
            .unwrap_or_else(|e| panic!("{what}: direct serialiser refused: {e}"));
        let fast = codec.encode(record).expect("encode");
        assert_eq!(
            fast[HEADER_LEN..],
            direct[..],
            "{what}: encode used the direct path"
        );
        let resolving =
            encode_datum(T::schema(), T::fingerprint(), record).expect("resolving encode");
        assert_eq!(fast, resolving, "{what}: {record:?}");
        assert_eq!(&decode_fast_only::<T>(codec, &fast), record, "{what}");
        assert_eq!(
            &codec
                .decode_resolving::<T>(&fast)
                .expect("decode resolving"),
            record,
            "{what}"
        );
        assert_eq!(&codec.decode::<T>(&fast).expect("decode"), record, "{what}");
    }

    fn sale(lines: usize) -> SaleTransaction {
        SaleTransaction {
            envelope: envelope(),
            kind: SaleKind::Sale,
            transaction_id: "t-1".into(),
            terminal_id: "pos-1".into(),
            currency: "EUR".into(),
            lines: (0..lines)
                .map(|i| LineItem {
                    sku: format!("sku-{i}"),
                    quantity: 1.5 + i as f64,
                    unit_price_minor: -199 + i as i64,
                })
                .collect(),
            total_minor: 1194,
            original_transaction_id: None,
        }
    }

    fn alert(labels: &[(&str, &str)], value: Option<f64>) -> AlertTransition {
        AlertTransition {
            envelope: envelope(),
            alert_id: "a".into(),
            rule_id: "freezer-warm".into(),
            state: AlertState::Resolved,
            severity: AlertSeverity::Warning,
            subject: "freezer-1".into(),
            summary: "warm".into(),
            value,
            started_at: -1,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ended_at: None,
            rule_kind: None,
        }
    }

    fn rejected(original: &[u8], optionals: bool) -> RejectedRecord {
        RejectedRecord {
            envelope: envelope(),
            reason: "bad".into(),
            field: optionals.then(|| "lines[0].quantity".into()),
            original: original.to_vec().into(),
            original_event_id: optionals.then(|| "e-1".into()),
            source_topic: optionals.then(|| "pos.sales.v1".into()),
            source_partition: optionals.then_some(i32::MAX),
            source_offset: optionals.then_some(i64::MIN),
            original_length: optionals.then_some(3),
            original_sha256: optionals.then(|| "ab".repeat(32)),
        }
    }

    #[test]
    fn fast_paths_match_resolving_paths_for_every_record_type() {
        let codec = AvroCodec::new();
        for lines in [0, 1, 3] {
            let mut s = sale(lines);
            check_both_paths(&codec, &s);
            s.kind = SaleKind::Void;
            s.original_transaction_id = Some("t-0".into());
            check_both_paths(&codec, &s);
        }
        for reason in [None, Some(AdjustmentReason::Transfer)] {
            check_both_paths(
                &codec,
                &InventoryChange {
                    envelope: envelope(),
                    kind: InventoryChangeKind::Adjustment,
                    sku: "milk".into(),
                    quantity: -3.25,
                    reason,
                },
            );
        }
        for software_version in [None, Some("1.2.3".to_string())] {
            check_both_paths(
                &codec,
                &PosHeartbeat {
                    envelope: envelope(),
                    terminal_id: "pos-1".into(),
                    app_up: false,
                    printer: PrinterStatus::PaperOut,
                    network: NetworkStatus::Degraded,
                    software_version,
                },
            );
        }
        for appliance in [None, Some("freezer".to_string())] {
            check_both_paths(
                &codec,
                &SensorReading {
                    envelope: envelope(),
                    device_id: "d-1".into(),
                    kind: SensorKind::Door,
                    value: 1.0,
                    unit: SensorUnit::OpenClosed,
                    appliance,
                },
            );
        }
        // bytes: empty, text, and every byte value (not valid UTF-8).
        let all_bytes: Vec<u8> = (0..=255).collect();
        for (original, optionals) in [
            (&b""[..], false),
            (&b"{\"x\":1}"[..], true),
            (&all_bytes[..], true),
        ] {
            check_both_paths(&codec, &rejected(original, optionals));
        }
        // maps of at most one entry: byte order of several entries follows HashMap
        // iteration order, which differs between the record's map and to_value's copy.
        check_both_paths(&codec, &alert(&[], None));
        check_both_paths(&codec, &alert(&[("appliance", "freezer")], Some(-9.5)));
        for days in [vec![], vec![(20_000, 1.0), (20_001, 2.5)]] {
            for optionals in [false, true] {
                check_both_paths(
                    &codec,
                    &DemandForecast {
                        envelope: envelope(),
                        sku: "milk".into(),
                        method: "ets".into(),
                        interval_level: 0.9,
                        days: days
                            .iter()
                            .map(|&(date, mean)| ForecastDay {
                                date,
                                mean,
                                lower: mean - 1.0,
                                upper: mean + 1.0,
                                wide_lower: None,
                                wide_upper: None,
                            })
                            .collect(),
                        on_hand: optionals.then_some(12.0),
                        days_of_cover: optionals.then_some(3.5),
                        stock_out_probability: optionals.then_some(0.25),
                        wide_interval_level: None,
                        lead_time_days: None,
                        backtest: None,
                    },
                );
            }
        }
        for error in [None, Some("timeout".to_string())] {
            check_both_paths(
                &codec,
                &NotificationOutcome {
                    envelope: envelope(),
                    alert_id: "a".into(),
                    alert_state: NotifiedState::Firing,
                    receiver: "ops".into(),
                    channel: Channel::WhatsApp,
                    status: DeliveryStatus::Suppressed,
                    attempts: 3,
                    error,
                },
            );
        }
    }

    /// Several labels: bytes may differ in entry order only; both decoders agree.
    #[test]
    fn alert_labels_survive_both_paths() {
        let codec = AvroCodec::new();
        let record = alert(
            &[
                ("appliance", "freezer"),
                ("category", "frozen"),
                ("zone", "b"),
            ],
            Some(4.0),
        );
        let fast = codec.encode(&record).expect("encode");
        let resolving = encode_datum(
            AlertTransition::schema(),
            AlertTransition::fingerprint(),
            &record,
        )
        .expect("resolving encode");
        assert_eq!(fast.len(), resolving.len());
        for bytes in [&fast, &resolving] {
            assert_eq!(decode_fast_only::<AlertTransition>(&codec, bytes), record);
            assert_eq!(
                codec
                    .decode_resolving::<AlertTransition>(bytes)
                    .expect("decode resolving"),
                record
            );
        }
    }
}
