//! Validation of posted JSON events into typed records.
//!
//! Input format (one object per event, `type` selects the shape):
//!
//! | type | fields besides the envelope |
//! |---|---|
//! | `sale`, `refund`, `void` | `transaction_id`, `terminal_id`, `currency`, `lines[]` (`sku`, `quantity`, `unit_price_minor`), optional `original_transaction_id` |
//! | `stock_snapshot` | `sku`, `quantity` (on hand, >= 0) |
//! | `stock_adjustment` | `sku`, `quantity` (signed delta, != 0), `reason` |
//! | `pos_heartbeat` | `terminal_id`, `app_up`, `printer`, `network`, optional `software_version` |
//! | `sensor_reading` | `device_id`, `kind`, `value`, optional `unit`, optional `appliance` |
//!
//! Envelope fields: `event_id` (UUID, required: the idempotency key), `store_id`
//! (required), `tenant_id` (optional: the key's tenant), `occurred_at` (RFC 3339).
//! Unknown fields are rejected, so a misspelt optional field is not silently dropped.
//! Every rejection names the field (`lines[2].quantity`) and the reason.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use storepulse_runtime::contract::{
    MAX_ID_LEN, MAX_LINES, milli_units, sensor_range, sensor_value_ok, total_minor,
};
use storepulse_runtime::dead_letter::Rejection;
use storepulse_runtime::records::*;
use storepulse_runtime::vocabulary::{EventType, Vocabulary};
use uuid::Uuid;

/// Who is posting: the store the API key is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreIdentity {
    pub tenant_id: String,
    pub store_id: String,
}

/// A validated event, ready to publish.
#[derive(Debug, Clone)]
pub enum ValidEvent {
    Sale(SaleTransaction),
    Inventory(InventoryChange),
    Heartbeat(PosHeartbeat),
    Sensor(SensorReading),
}

impl ValidEvent {
    pub fn event_id(&self) -> &str {
        &self.envelope().event_id
    }
    pub fn envelope(&self) -> &Envelope {
        match self {
            ValidEvent::Sale(r) => &r.envelope,
            ValidEvent::Inventory(r) => &r.envelope,
            ValidEvent::Heartbeat(r) => &r.envelope,
            ValidEvent::Sensor(r) => &r.envelope,
        }
    }
    /// Bounded label for metrics.
    pub fn kind_label(&self) -> &'static str {
        match self {
            ValidEvent::Sale(_) => "sale",
            ValidEvent::Inventory(_) => "inventory",
            ValidEvent::Heartbeat(_) => "pos_heartbeat",
            ValidEvent::Sensor(_) => "sensor_reading",
        }
    }
}

/// An event that names a store other than the key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignStore {
    pub field: &'static str,
    pub value: String,
}

/// Validation outcome of one event.
#[derive(Debug)]
pub enum Checked {
    Valid(ValidEvent),
    Invalid {
        event_id: Option<String>,
        rejection: Rejection,
    },
}

impl Checked {
    /// The id the event has (valid) or claimed (invalid), or "".
    pub fn event_id(&self) -> &str {
        match self {
            Checked::Valid(ev) => ev.event_id(),
            Checked::Invalid { event_id, .. } => event_id.as_deref().unwrap_or(""),
        }
    }
}

/// Policy knobs of validation (from the `[ingest]` settings).
#[derive(Debug, Clone, Copy)]
pub struct ValidationPolicy {
    /// How far in the future `occurred_at` may lie (clock skew of store devices).
    pub max_future_skew: Duration,
    /// How far in the past `occurred_at` may lie (gateways buffer while offline).
    pub max_event_age: Duration,
    /// Largest quantity of a sale line or a stock level/adjustment (absolute).
    pub max_quantity: f64,
    /// Largest unit price, in minor units.
    pub max_unit_price_minor: i64,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        Self {
            max_future_skew: Duration::minutes(5),
            max_event_age: Duration::days(30),
            max_quantity: 1_000_000.0,
            max_unit_price_minor: 100_000_000_000,
        }
    }
}

/// A key or value as it may appear in an error message: control characters as
/// JSON escapes (`\u0000`), like the request spelled them.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                format!("\\u{:04x}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// One JSON object being read, with the path prefix used in error messages.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Fields<'a> {
    fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> Rejection {
        Rejection::field(self.name(key), reason)
    }

    fn present(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn text(&self, key: &str) -> Result<String, Rejection> {
        match self.present(key) {
            None => Err(self.err(key, "is required")),
            Some(Value::String(s)) => {
                let s = s.trim();
                if s.contains('\0') {
                    Err(self.err(
                        key,
                        "contains a NUL character (\\u0000), which cannot be stored",
                    ))
                } else if s.is_empty() {
                    Err(self.err(key, "must not be empty"))
                } else if s.len() > MAX_ID_LEN {
                    Err(self.err(key, format!("longer than {MAX_ID_LEN} characters")))
                } else {
                    Ok(s.to_string())
                }
            }
            Some(other) => {
                Err(self.err(key, format!("must be a string, got {}", json_type(other))))
            }
        }
    }

    fn opt_text(&self, key: &str) -> Result<Option<String>, Rejection> {
        match self.present(key) {
            None => Ok(None),
            Some(_) => self.text(key).map(Some),
        }
    }

    fn number(&self, key: &str) -> Result<f64, Rejection> {
        match self.present(key) {
            None => Err(self.err(key, "is required")),
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|f| f.is_finite())
                // -0 is 0: one zero in the read store.
                .map(|f| if f == 0.0 { 0.0 } else { f })
                .ok_or_else(|| self.err(key, "must be a finite number")),
            Some(other) => {
                Err(self.err(key, format!("must be a number, got {}", json_type(other))))
            }
        }
    }

    fn integer(&self, key: &str) -> Result<i64, Rejection> {
        match self.present(key) {
            None => Err(self.err(key, "is required")),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| self.err(key, "must be an integer (minor currency units)")),
            Some(other) => {
                Err(self.err(key, format!("must be an integer, got {}", json_type(other))))
            }
        }
    }

    fn boolean(&self, key: &str) -> Result<bool, Rejection> {
        match self.present(key) {
            None => Err(self.err(key, "is required")),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(
                key,
                format!("must be true or false, got {}", json_type(other)),
            )),
        }
    }

    fn choice<T: Vocabulary>(&self, key: &str) -> Result<T, Rejection> {
        let s = self.text(key)?;
        T::parse(&s).ok_or_else(|| {
            self.err(
                key,
                format!(
                    "unknown {} {:?}; expected one of {}",
                    T::NAME,
                    printable(&s),
                    T::expected()
                ),
            )
        })
    }

    /// A quantity: finite, within ±`max`, at most three decimals; in milli-units.
    fn quantity(&self, key: &str, max: f64) -> Result<(f64, i64), Rejection> {
        let q = self.number(key)?;
        if q.abs() > max {
            return Err(self.err(key, format!("beyond the allowed magnitude {max}")));
        }
        let milli = milli_units(q).ok_or_else(|| self.err(key, "at most 3 decimal places"))?;
        Ok((q, milli))
    }

    fn only(&self, allowed: &[&str]) -> Result<(), Rejection> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.err(&printable(k), "unknown field")),
            None => Ok(()),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const ENVELOPE_FIELDS: [&str; 5] = ["type", "event_id", "tenant_id", "store_id", "occurred_at"];

/// Checks one posted event on behalf of `who`, received at `now`.
///
/// `Err` is an authorization failure (the event names another tenant or store than
/// the key's): the whole request is refused (403), unlike a validation failure.
pub fn check_event(
    raw: &Value,
    who: &StoreIdentity,
    now: DateTime<Utc>,
    policy: ValidationPolicy,
) -> Result<Checked, ForeignStore> {
    let Value::Object(map) = raw else {
        return Ok(Checked::Invalid {
            event_id: None,
            rejection: Rejection::whole(format!(
                "event must be a JSON object, got {}",
                json_type(raw)
            )),
        });
    };
    let f = Fields {
        map,
        path: String::new(),
    };
    let claimed_id = map
        .get("event_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let invalid = |rejection| Checked::Invalid {
        event_id: claimed_id.clone(),
        rejection,
    };

    // Authorization first: a key never writes another store's events.
    if let Some(Value::String(t)) = map.get("tenant_id")
        && t.trim() != who.tenant_id
    {
        return Err(ForeignStore {
            field: "tenant_id",
            value: t.clone(),
        });
    }
    if let Some(Value::String(s)) = map.get("store_id")
        && s.trim() != who.store_id
    {
        return Err(ForeignStore {
            field: "store_id",
            value: s.clone(),
        });
    }

    Ok(match build(&f, who, now, policy) {
        Ok(ev) => Checked::Valid(ev),
        Err(rejection) => invalid(rejection),
    })
}

fn build(
    f: &Fields<'_>,
    who: &StoreIdentity,
    now: DateTime<Utc>,
    policy: ValidationPolicy,
) -> Result<ValidEvent, Rejection> {
    let ty_text = f.text("type")?;
    let ty = EventType::parse(&ty_text).ok_or_else(|| {
        f.err(
            "type",
            format!(
                "unknown event type {:?}; expected one of {}",
                printable(&ty_text),
                EventType::expected()
            ),
        )
    })?;
    let event_id = f.text("event_id")?;
    let event_id = Uuid::parse_str(&event_id).map_err(|_| f.err("event_id", "must be a UUID"))?;
    if event_id.is_nil() {
        return Err(f.err(
            "event_id",
            "the nil UUID is not an id; give each event its own UUID",
        ));
    }
    let event_id = event_id.hyphenated().to_string();
    f.text("store_id")?;
    let occurred = f.text("occurred_at")?;
    let occurred = DateTime::parse_from_rfc3339(&occurred)
        .map_err(|e| {
            f.err(
                "occurred_at",
                format!("must be an RFC 3339 timestamp with offset: {e}"),
            )
        })?
        .with_timezone(&Utc);
    if occurred > now + policy.max_future_skew {
        return Err(f.err(
            "occurred_at",
            format!(
                "is in the future (beyond {}s of clock skew)",
                policy.max_future_skew.num_seconds()
            ),
        ));
    }
    if occurred < now - policy.max_event_age {
        return Err(f.err(
            "occurred_at",
            format!(
                "is older than the accepted {} days (ingest.max_event_age_secs)",
                policy.max_event_age.num_days()
            ),
        ));
    }
    let envelope = Envelope {
        event_id,
        tenant_id: who.tenant_id.clone(),
        store_id: who.store_id.clone(),
        occurred_at: to_micros(occurred),
        received_at: to_micros(now),
        source: "ingest-http".into(),
    };
    let allow = |extra: &[&str]| -> Result<(), Rejection> {
        let all: Vec<&str> = ENVELOPE_FIELDS.iter().chain(extra).copied().collect();
        f.only(&all)
    };

    Ok(match ty {
        EventType::Sale | EventType::Refund | EventType::Void => {
            allow(&[
                "transaction_id",
                "terminal_id",
                "currency",
                "lines",
                "original_transaction_id",
            ])?;
            let kind = match ty {
                EventType::Sale => SaleKind::Sale,
                EventType::Refund => SaleKind::Refund,
                _ => SaleKind::Void,
            };
            let currency = f.text("currency")?;
            if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
                return Err(f.err("currency", "must be an ISO 4217 code like EUR"));
            }
            let lines = match f.present("lines") {
                None => return Err(f.err("lines", "is required")),
                Some(Value::Array(a)) if a.is_empty() => {
                    return Err(f.err("lines", "must have at least one line"));
                }
                Some(Value::Array(a)) if a.len() > MAX_LINES => {
                    return Err(f.err("lines", format!("more than {MAX_LINES} lines")));
                }
                Some(Value::Array(a)) => a,
                Some(other) => {
                    return Err(f.err(
                        "lines",
                        format!("must be an array, got {}", json_type(other)),
                    ));
                }
            };
            let mut items = Vec::with_capacity(lines.len());
            let mut amounts = Vec::with_capacity(lines.len());
            for (i, line) in lines.iter().enumerate() {
                let path = format!("lines[{i}]");
                let Value::Object(m) = line else {
                    return Err(Rejection::field(path, "must be an object"));
                };
                let lf = Fields { map: m, path };
                lf.only(&["sku", "quantity", "unit_price_minor"])?;
                let sku = lf.text("sku")?;
                let (quantity, milli) = lf.quantity("quantity", policy.max_quantity)?;
                if quantity <= 0.0 {
                    return Err(lf.err(
                        "quantity",
                        "must be > 0 (refunds and voids carry positive quantities)",
                    ));
                }
                let unit_price_minor = lf.integer("unit_price_minor")?;
                if unit_price_minor < 0 {
                    return Err(lf.err("unit_price_minor", "must be >= 0"));
                }
                if unit_price_minor > policy.max_unit_price_minor {
                    return Err(lf.err(
                        "unit_price_minor",
                        format!("above the allowed {}", policy.max_unit_price_minor),
                    ));
                }
                amounts.push((milli, unit_price_minor));
                items.push(LineItem {
                    sku,
                    quantity,
                    unit_price_minor,
                });
            }
            let original_transaction_id = f.opt_text("original_transaction_id")?;
            if kind == SaleKind::Sale && original_transaction_id.is_some() {
                return Err(f.err(
                    "original_transaction_id",
                    "only refunds and voids reverse a transaction",
                ));
            }
            ValidEvent::Sale(SaleTransaction {
                envelope,
                kind,
                transaction_id: f.text("transaction_id")?,
                terminal_id: f.text("terminal_id")?,
                currency,
                lines: items,
                total_minor: total_minor(&amounts)
                    .ok_or_else(|| f.err("lines", "the total does not fit 64-bit minor units"))?,
                original_transaction_id,
            })
        }
        EventType::StockSnapshot => {
            allow(&["sku", "quantity"])?;
            let (quantity, _) = f.quantity("quantity", policy.max_quantity)?;
            if quantity < 0.0 {
                return Err(f.err("quantity", "on-hand stock must be >= 0"));
            }
            ValidEvent::Inventory(InventoryChange {
                envelope,
                kind: InventoryChangeKind::Snapshot,
                sku: f.text("sku")?,
                quantity,
                reason: None,
            })
        }
        EventType::StockAdjustment => {
            allow(&["sku", "quantity", "reason"])?;
            let (quantity, _) = f.quantity("quantity", policy.max_quantity)?;
            if quantity == 0.0 {
                return Err(f.err(
                    "quantity",
                    "an adjustment must change the stock (non-zero delta)",
                ));
            }
            let reason: AdjustmentReason = f.choice("reason")?;
            ValidEvent::Inventory(InventoryChange {
                envelope,
                kind: InventoryChangeKind::Adjustment,
                sku: f.text("sku")?,
                quantity,
                reason: Some(reason),
            })
        }
        EventType::PosHeartbeat => {
            allow(&[
                "terminal_id",
                "app_up",
                "printer",
                "network",
                "software_version",
            ])?;
            ValidEvent::Heartbeat(PosHeartbeat {
                envelope,
                terminal_id: f.text("terminal_id")?,
                app_up: f.boolean("app_up")?,
                printer: f.choice::<PrinterStatus>("printer")?,
                network: f.choice::<NetworkStatus>("network")?,
                software_version: f.opt_text("software_version")?,
            })
        }
        EventType::SensorReading => {
            allow(&["device_id", "kind", "value", "unit", "appliance"])?;
            let kind: SensorKind = f.choice("kind")?;
            let unit = match f.present("unit") {
                None => kind.unit(),
                Some(_) => f.choice::<SensorUnit>("unit")?,
            };
            if unit != kind.unit() {
                return Err(f.err(
                    "unit",
                    format!(
                        "{unit} does not match kind {kind}; expected {}",
                        kind.unit()
                    ),
                ));
            }
            let value = f.number("value")?;
            if !sensor_value_ok(kind, value) {
                return Err(f.err("value", sensor_range(kind).1));
            }
            ValidEvent::Sensor(SensorReading {
                envelope,
                device_id: f.text("device_id")?,
                kind,
                value,
                unit,
                appliance: f.opt_text("appliance")?,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn who() -> StoreIdentity {
        StoreIdentity {
            tenant_id: "acme".into(),
            store_id: "s-1".into(),
        }
    }
    fn policy() -> ValidationPolicy {
        ValidationPolicy::default()
    }
    fn check(v: Value) -> Result<Checked, ForeignStore> {
        check_event(&v, &who(), Utc::now(), policy())
    }
    fn rejected_field(v: Value) -> String {
        match check(v) {
            Ok(Checked::Invalid { rejection, .. }) => rejection.field.unwrap_or_default(),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    fn sale() -> Value {
        let an_hour_ago = (Utc::now() - Duration::hours(1)).to_rfc3339();
        json!({"type":"sale","event_id":"7d1c3c52-8f4e-4a3a-9a57-0d5f3e1b2c11","store_id":"s-1",
               "occurred_at":an_hour_ago,"transaction_id":"t1","terminal_id":"pos-1",
               "currency":"EUR","lines":[{"sku":"milk","quantity":2,"unit_price_minor":129}]})
    }

    #[test]
    fn a_valid_sale_becomes_a_typed_record() {
        match check(sale()) {
            Ok(Checked::Valid(ValidEvent::Sale(s))) => {
                assert_eq!(s.total_minor, 258);
                assert_eq!(s.envelope.tenant_id, "acme", "tenant comes from the key");
                assert_eq!(s.lines[0].sku, "milk");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejections_name_the_field() {
        let mut v = sale();
        v["lines"][0]["quantity"] = json!(-1);
        assert_eq!(rejected_field(v), "lines[0].quantity");
        let mut v = sale();
        v["event_id"] = json!("nope");
        assert_eq!(rejected_field(v), "event_id");
        let mut v = sale();
        v["colour"] = json!("red");
        assert_eq!(rejected_field(v), "colour");
        let mut v = sale();
        v["occurred_at"] = json!("yesterday");
        assert_eq!(rejected_field(v), "occurred_at");
        let mut v = sale();
        v["occurred_at"] = json!((Utc::now() + Duration::hours(2)).to_rfc3339());
        assert_eq!(rejected_field(v), "occurred_at");
        let v = json!({"type":"sensor_reading","event_id":"7d1c3c52-8f4e-4a3a-9a57-0d5f3e1b2c11","store_id":"s-1",
               "occurred_at":Utc::now().to_rfc3339(),"device_id":"f1","kind":"temperature","value":20,"unit":"percent"});
        assert_eq!(rejected_field(v), "unit");
        assert!(matches!(check(json!([1])), Ok(Checked::Invalid { .. })));
    }

    #[test]
    fn money_is_summed_exactly_in_integers() {
        let mut v = sale();
        v["lines"] = json!([{"sku":"a","quantity":0.1,"unit_price_minor":3},
                            {"sku":"b","quantity":0.2,"unit_price_minor":3}]);
        match check(v) {
            Ok(Checked::Valid(ValidEvent::Sale(s))) => assert_eq!(s.total_minor, 1), // 0.9
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unstorable_and_unbounded_values_are_refused() {
        let mut v = sale();
        v["lines"][0]["sku"] = json!("milk\u{0}x");
        assert_eq!(rejected_field(v), "lines[0].sku");
        let mut v = sale();
        v["lines"][0]["quantity"] = json!(1e300);
        assert_eq!(rejected_field(v), "lines[0].quantity");
        let mut v = sale();
        v["lines"][0]["unit_price_minor"] = json!(i64::MAX);
        assert_eq!(rejected_field(v), "lines[0].unit_price_minor");
        let mut v = sale();
        v["event_id"] = json!(Uuid::nil().to_string());
        assert_eq!(rejected_field(v), "event_id");
        let mut v = sale();
        v["occurred_at"] = json!((Utc::now() - Duration::days(31)).to_rfc3339());
        assert_eq!(rejected_field(v), "occurred_at");
        let mut v = sale();
        v["occurred_at"] = json!((Utc::now() - Duration::days(29)).to_rfc3339());
        assert!(
            matches!(check(v), Ok(Checked::Valid(_))),
            "29 days back is fine"
        );
        let mut v = sale();
        v["x\u{0}y"] = json!(1);
        assert_eq!(rejected_field(v), "x\\u0000y", "the key is escaped");
    }

    #[test]
    fn another_store_is_forbidden() {
        let mut v = sale();
        v["store_id"] = json!("s-2");
        assert!(matches!(
            check(v),
            Err(ForeignStore {
                field: "store_id",
                ..
            })
        ));
        let mut v = sale();
        v["tenant_id"] = json!("other");
        assert!(matches!(
            check(v),
            Err(ForeignStore {
                field: "tenant_id",
                ..
            })
        ));
    }
}
