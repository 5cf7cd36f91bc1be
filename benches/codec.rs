//! Avro single-object codec throughput: the per-record cost every service pays.
//!
//! `cargo bench --bench codec`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
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
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
