//! The alerts.v1 consumer's processor: routes each transition and records one
//! pending delivery per receiver in the ledger.
//!
//! Guarantees: a batch's deliveries are in the ledger before its offsets are
//! committed (the batch consumer commits after [`BatchProcessor::apply`]); applying
//! a batch again changes nothing; a transition that is undecodable or breaks the
//! contract is dead-lettered with the field at fault, never blocking its partition.

use std::collections::HashMap;
use std::sync::Arc;

use storepulse_runtime::AvroCodec;
use storepulse_runtime::consumer::{Batch, BatchProcessor, ConsumedRecord, Failure};
use storepulse_runtime::contract;
use storepulse_runtime::dead_letter::Rejection;
use storepulse_runtime::records::{AlertState, AlertTransition, from_micros};
use tokio::sync::watch;

use crate::ledger::{Ledger, LedgerError, NewDelivery};
use crate::policy::{Policy, severity_name, state_name};

/// Routes alert transitions into the ledger.
pub struct AlertRouter {
    pub ledger: Ledger,
    pub codec: AvroCodec,
    pub policy: watch::Receiver<Arc<Policy>>,
    /// Bumped after new deliveries were recorded, waking the workers.
    pub wake: watch::Sender<u64>,
}

impl std::fmt::Debug for AlertRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertRouter").finish_non_exhaustive()
    }
}

/// Identity of a transition in the ledger: the alert and its state.
pub fn transition_id(alert: &AlertTransition) -> String {
    format!("{}:{}", alert.alert_id, state_name(alert.state))
}

/// The alert as messages show it.
pub fn alert_view(alert: &AlertTransition) -> serde_json::Value {
    let labels: std::collections::BTreeMap<&String, &String> = alert.labels.iter().collect();
    serde_json::json!({
        "alert_id": alert.alert_id,
        "event_id": alert.envelope.event_id,
        "rule_id": alert.rule_id,
        "state": state_name(alert.state),
        "severity": severity_name(alert.severity),
        "tenant_id": alert.envelope.tenant_id,
        "store_id": alert.envelope.store_id,
        "subject": alert.subject,
        "summary": alert.summary,
        "value": alert.value,
        "started_at": from_micros(alert.started_at).to_rfc3339(),
        "occurred_at": from_micros(alert.envelope.occurred_at).to_rfc3339(),
        "labels": labels,
    })
}

/// The ledger rows `policy` makes of `alert`.
pub fn deliveries(policy: &Policy, alert: &AlertTransition) -> Vec<NewDelivery> {
    let view = alert_view(alert);
    policy
        .route(alert)
        .into_iter()
        .map(|d| NewDelivery {
            transition_id: transition_id(alert),
            receiver: d.receiver.name.clone(),
            alert_id: alert.alert_id.clone(),
            alert_state: state_name(alert.state),
            tenant_id: alert.envelope.tenant_id.clone(),
            store_id: alert.envelope.store_id.clone(),
            route: d.route.path.clone(),
            group_key: d.group_key(alert),
            alert: view.clone(),
            suppressed: alert.state == AlertState::Resolved && !d.receiver.send_resolved,
        })
        .collect()
}

impl AlertRouter {
    /// The resolves owed to escalation receivers: an alert escalated to someone its
    /// routing does not name is resolved for them too (unless their receiver has
    /// `send_resolved = false`, or is gone from the policy).
    async fn resolves_for_escalations(
        &self,
        policy: &Policy,
        batch: &Batch<AlertTransition>,
    ) -> Result<Vec<NewDelivery>, LedgerError> {
        let resolved: HashMap<&str, &AlertTransition> = batch
            .items
            .iter()
            .filter(|p| p.item.state == AlertState::Resolved)
            .map(|p| (p.item.alert_id.as_str(), &p.item))
            .collect();
        let ids: Vec<String> = resolved.keys().map(|id| id.to_string()).collect();
        let reached = self.ledger.escalated_receivers(&ids).await?;
        Ok(reached
            .into_iter()
            .filter_map(|e| {
                let alert = resolved.get(e.alert_id.as_str())?;
                let receiver = policy.receivers.get(&e.receiver)?;
                Some(NewDelivery {
                    transition_id: transition_id(alert),
                    receiver: e.receiver,
                    alert_id: e.alert_id,
                    alert_state: state_name(alert.state),
                    tenant_id: alert.envelope.tenant_id.clone(),
                    store_id: alert.envelope.store_id.clone(),
                    route: e.route,
                    group_key: e.group_key,
                    alert: alert_view(alert),
                    suppressed: !receiver.send_resolved,
                })
            })
            .collect())
    }
}

impl BatchProcessor for AlertRouter {
    type Item = AlertTransition;
    type Error = LedgerError;

    fn decode(&self, record: &ConsumedRecord) -> Result<AlertTransition, Rejection> {
        let alert: AlertTransition = self
            .codec
            .decode(&record.payload)
            .map_err(|e| Rejection::whole(format!("undecodable alerts.v1: {e}")))?;
        contract::check_envelope(&alert.envelope, record.key.as_deref())?;
        for (field, value) in [
            ("alert_id", &alert.alert_id),
            ("rule_id", &alert.rule_id),
            ("subject", &alert.subject),
        ] {
            if value.trim().is_empty() {
                return Err(Rejection::field(field, "must not be empty"));
            }
            if value.contains('\0') {
                return Err(Rejection::field(field, "contains a NUL character"));
            }
        }
        if alert.summary.contains('\0')
            || alert
                .labels
                .iter()
                .any(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(Rejection::field(
                "summary",
                "summary or a label contains a NUL character",
            ));
        }
        Ok(alert)
    }

    async fn apply(&mut self, batch: &Batch<AlertTransition>) -> Result<(), LedgerError> {
        let policy = self.policy.borrow().clone();
        // One row per (transition, receiver) even when a batch repeats a transition.
        let mut rows: HashMap<(String, String), NewDelivery> = HashMap::new();
        for p in &batch.items {
            for d in deliveries(&policy, &p.item) {
                rows.entry((d.transition_id.clone(), d.receiver.clone()))
                    .or_insert(d);
            }
        }
        for d in self.resolves_for_escalations(&policy, batch).await? {
            rows.entry((d.transition_id.clone(), d.receiver.clone()))
                .or_insert(d);
        }
        let rows: Vec<NewDelivery> = rows.into_values().collect();
        let inserted = self.ledger.enqueue(&rows).await?;
        if inserted > 0 {
            self.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    fn classify(&self, error: &LedgerError) -> Failure {
        error.failure()
    }
}
