//! Avro single-object encoding with schema resolution.
//!
//! Every payload on a StorePulse topic is `C3 01` + the 8-byte CRC-64-AVRO (Rabin)
//! fingerprint of the writer schema + the Avro binary datum. The [`AvroCodec`] keeps a
//! registry of known writer schemas by fingerprint; decoding finds the writer schema,
//! then resolves the datum against the reader's schema (the [`Record`] type's file), so
//! a record written with an older compatible schema reads fine with the new one.
//! apache-avro's own single-object readers skip that resolution step, hence this type.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::rabin::Rabin;
use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};
use serde::Serialize;

use crate::records::{Record, bundled_schemas};

/// The two marker bytes that open a single-object encoded datum.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// The 8-byte fingerprint that names a writer schema in the header.
pub type Fingerprint = [u8; 8];

/// Why a payload could not be encoded or decoded. Decode errors are poison: the
/// record goes to the dead-letter topic with this as its reason.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("payload is not Avro single-object encoded (no C3 01 header, {len} bytes)")]
    NotSingleObject { len: usize },
    #[error("unknown writer schema fingerprint {0}; register the schema or upgrade this service")]
    UnknownWriterSchema(String),
    #[error("writer schema {writer} cannot be resolved to reader schema {reader}: {source}")]
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

/// Encoder/decoder for single-object Avro with a registry of writer schemas.
///
/// Cheap to clone; clones share the registry.
#[derive(Debug, Clone)]
pub struct AvroCodec {
    /// Known writer schemas, by fingerprint: every bundled schema, plus any older
    /// version registered with [`AvroCodec::register`].
    writers: Arc<RwLock<HashMap<Fingerprint, Arc<Schema>>>>,
}

impl Default for AvroCodec {
    fn default() -> Self {
        Self::new()
    }
}

/// Fingerprint of a schema, as written in the single-object header.
pub fn fingerprint(schema: &Schema) -> Fingerprint {
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
        codec
    }

    /// Makes `schema` known as a writer schema (e.g. an older version of a record).
    pub fn register(&self, schema: Schema) -> Fingerprint {
        let fp = fingerprint(&schema);
        self.writers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fp, Arc::new(schema));
        fp
    }

    /// Encodes `record` with its current schema.
    pub fn encode<T: Record>(&self, record: &T) -> Result<Vec<u8>, CodecError> {
        encode_datum(T::schema(), T::fingerprint(), record)
    }

    /// Encodes any serializable value with an explicit writer schema (e.g. an older
    /// version, in tests of schema evolution).
    pub fn encode_with<T: Serialize>(schema: &Schema, record: &T) -> Result<Vec<u8>, CodecError> {
        encode_datum(schema, fingerprint(schema), record)
    }

    /// The writer schema a payload names in its header.
    pub fn writer_schema(&self, payload: &[u8]) -> Result<Arc<Schema>, CodecError> {
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

    /// Decodes a payload into `T`, resolving the writer schema to `T`'s schema.
    pub fn decode<T: Record>(&self, payload: &[u8]) -> Result<T, CodecError> {
        let writer = self.writer_schema(payload)?;
        let reader = T::schema();
        let mut body = &payload[HEADER_LEN..];
        let value = from_avro_datum(&writer, &mut body, Some(reader)).map_err(|e| {
            CodecError::Resolution {
                writer: schema_name(&writer),
                reader: schema_name(reader),
                source: Box::new(e),
            }
        })?;
        Ok(from_value::<T>(&value)?)
    }
}

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
        };
        let bytes = codec.encode(&alert).expect("encode");
        assert_eq!(
            codec.decode::<AlertTransition>(&bytes).expect("decode"),
            alert
        );
    }

    /// Version 0 of sensor readings had no `appliance` field. A payload written with it
    /// must read with today's schema, the new field taking its default.
    #[test]
    fn older_writer_schema_resolves_to_current_reader() {
        let v0 = Schema::parse_str(
            r#"{"type":"record","name":"SensorReading","namespace":"storepulse.v1","fields":[
              {"name":"envelope","type":{"type":"record","name":"Envelope","fields":[
                {"name":"event_id","type":"string"},{"name":"tenant_id","type":"string"},
                {"name":"store_id","type":"string"},
                {"name":"occurred_at","type":{"type":"long","logicalType":"timestamp-micros"}},
                {"name":"received_at","type":{"type":"long","logicalType":"timestamp-micros"}},
                {"name":"source","type":"string"}]}},
              {"name":"device_id","type":"string"},
              {"name":"kind","type":{"type":"enum","name":"SensorKind","symbols":["Temperature","Humidity","Door","Power"]}},
              {"name":"value","type":"double"},
              {"name":"unit","type":{"type":"enum","name":"SensorUnit","symbols":["Celsius","Percent","OpenClosed","OnOff"]}}]}"#,
        )
        .expect("v0 schema");
        #[derive(Serialize)]
        struct SensorReadingV0 {
            envelope: Envelope,
            device_id: String,
            kind: SensorKind,
            value: f64,
            unit: SensorUnit,
        }
        let old = SensorReadingV0 {
            envelope: envelope(),
            device_id: "freezer-1".into(),
            kind: SensorKind::Temperature,
            value: -18.5,
            unit: SensorUnit::Celsius,
        };
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
}
