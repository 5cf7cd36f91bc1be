//! The forecaster's batch processor: decodes `pos.sales.v1` and `pos.inventory.v1`
//! (each record checked against the topic contract; a bad one is dead-lettered with
//! its reason by the shared consumer) and applies each batch to the state with its
//! offsets in one transaction ([`crate::state`]).

use deadpool_postgres::Pool;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Failure};
use storepulse_runtime::contract::{RecordContract, check_envelope};
use storepulse_runtime::records::{InventoryChange, Record, SaleTransaction, topic};
use storepulse_runtime::{AvroCodec, Rejection};

use crate::publisher::ForecasterMetrics;
use crate::state::{self, Input, StateError};
use crate::zones::StoreZones;

/// Topics the forecaster consumes.
pub fn input_topics() -> Vec<String> {
    vec![topic::SALES.to_string(), topic::INVENTORY.to_string()]
}

/// The forecaster's [`BatchProcessor`].
#[derive(Debug)]
pub struct DemandProcessor {
    pool: Pool,
    group: String,
    codec: AvroCodec,
    zones: StoreZones,
    metrics: ForecasterMetrics,
}

impl DemandProcessor {
    pub fn new(
        pool: Pool,
        group: String,
        codec: AvroCodec,
        zones: StoreZones,
        metrics: ForecasterMetrics,
    ) -> Self {
        Self {
            pool,
            group,
            codec,
            zones,
            metrics,
        }
    }
}

fn read<T: Record + RecordContract>(
    codec: &AvroCodec,
    rec: &ConsumedRecord,
) -> Result<T, Rejection> {
    let r: T = codec
        .decode(&rec.payload)
        .map_err(|e| Rejection::whole(e.to_string()))?;
    check_envelope(r.envelope(), rec.key.as_deref())?;
    r.check_body()?;
    Ok(r)
}

impl BatchProcessor for DemandProcessor {
    type Item = Input;
    type Error = StateError;

    fn decode(&self, rec: &ConsumedRecord) -> Result<Input, Rejection> {
        match rec.topic.as_str() {
            topic::SALES => Ok(Input::Sale(read::<SaleTransaction>(&self.codec, rec)?)),
            topic::INVENTORY => Ok(Input::Stock(read::<InventoryChange>(&self.codec, rec)?)),
            other => Err(Rejection::whole(format!(
                "not a forecaster input topic: {other}"
            ))),
        }
    }

    async fn apply(&mut self, batch: &Batch<Input>) -> Result<(), StateError> {
        let a = state::apply_batch(&self.pool, &self.group, batch, &self.zones).await?;
        let m = &self.metrics.applied;
        m.with_label_values(&["sale_lines"]).inc_by(a.sale_lines);
        m.with_label_values(&["stock_changes"])
            .inc_by(a.stock_changes);
        m.with_label_values(&["replayed"]).inc_by(a.replayed);
        m.with_label_values(&["duplicates"]).inc_by(a.duplicates);
        Ok(())
    }

    fn classify(&self, error: &StateError) -> Failure {
        match error {
            StateError::Postgres(e) => match storepulse_runtime::db::classify_postgres(e) {
                Failure::Transient => Failure::Transient,
                // Every value is checked by the contract first: what the database
                // still refuses is a bug, not a record to isolate.
                _ => Failure::Fatal,
            },
            StateError::Pool(_) => Failure::Transient,
        }
    }
}
