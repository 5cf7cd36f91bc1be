//! Avro single-object codec throughput: the per-record cost every service pays.
//!
//! `cargo bench --bench codec`
//!
//! - `encode_sale_3_lines` / `decode_sale_3_lines`: the paths every service takes
//!   (direct serialise; direct deserialise since writer == reader).
//! - `decode_sale_3_lines_resolving`: the same bytes through Avro schema resolution
//!   (the path decode took for every record before).
//! - `decode_older_writer_resolving`: a sensor reading written with an older schema
//!   version, resolved to today's reader schema.

use apache_avro::Schema;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use storepulse_runtime::AvroCodec;
use storepulse_runtime::records::*;

fn sale() -> SaleTransaction {
    SaleTransaction {
        envelope: Envelope {
            event_id: "0b7f8c1e-3c59-4d8e-9d43-8f1c7f0a2a11".into(),
            tenant_id: "acme".into(),
            store_id: "store-001".into(),
            occurred_at: 1_763_000_000_000_000,
            received_at: 1_763_000_000_100_000,
            source: "ingest-http".into(),
        },
        kind: SaleKind::Sale,
        transaction_id: "store-001-00000042".into(),
        terminal_id: "pos-1".into(),
        currency: "EUR".into(),
        lines: (0..3)
            .map(|i| LineItem {
                sku: format!("sku-{i:04}"),
                quantity: 2.0,
                unit_price_minor: 199,
            })
            .collect(),
        total_minor: 1194,
        original_transaction_id: None,
    }
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

fn codec(c: &mut Criterion) {
    let codec = AvroCodec::new();
    let record = sale();
    let bytes = codec.encode(&record).expect("encode");
    let mut g = c.benchmark_group("avro_single_object");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_sale_3_lines", |b| {
        b.iter(|| codec.encode(std::hint::black_box(&record)))
    });
    g.bench_function("decode_sale_3_lines", |b| {
        b.iter(|| codec.decode::<SaleTransaction>(std::hint::black_box(&bytes)))
    });
    g.bench_function("decode_sale_3_lines_resolving", |b| {
        b.iter(|| codec.decode_resolving::<SaleTransaction>(std::hint::black_box(&bytes)))
    });

    let v0 = Schema::parse_str(SENSOR_V0).expect("v0 schema");
    let old = AvroCodec::encode_with(
        &v0,
        &SensorReadingV0 {
            envelope: record.envelope.clone(),
            device_id: "freezer-1".into(),
            kind: SensorKind::Temperature,
            value: -18.5,
            unit: SensorUnit::Celsius,
        },
    )
    .expect("encode v0");
    codec.register(v0);
    codec
        .decode::<SensorReading>(&old)
        .expect("v0 resolves to the current reader");
    g.bench_function("decode_older_writer_resolving", |b| {
        b.iter(|| codec.decode::<SensorReading>(std::hint::black_box(&old)))
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
