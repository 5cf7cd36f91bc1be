//! What the rules see of a record: one [`Observation`] per input record, in the
//! store's terms (which entity, what value, when), independent of the Avro types.
//!
//! Every input topic maps to one [`Source`]; a store's time advances per source
//! (see [`crate::engine`]), so a slow topic never makes another's events late.

use serde::{Deserialize, Serialize};
use storepulse_runtime::records::{
    DemandForecast, InventoryChange, InventoryChangeKind, NetworkStatus, PosHeartbeat,
    PrinterStatus, SaleKind, SaleTransaction, SensorKind, SensorReading, topic,
};

/// The input stream an observation comes from: one per consumed topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `sensor.readings.v1`; entity: the device.
    Sensor,
    /// `pos.device.v1`; entity: the terminal.
    Heartbeat,
    /// `pos.sales.v1`; entity: the terminal.
    Sales,
    /// `pos.inventory.v1`; entity: the SKU.
    Inventory,
    /// `forecasts.v1`; entity: the SKU.
    Forecast,
}

impl Source {
    /// Every source, in index order.
    pub const ALL: [Source; 5] = [
        Source::Sensor,
        Source::Heartbeat,
        Source::Sales,
        Source::Inventory,
        Source::Forecast,
    ];

    /// Dense index, for per-source arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The base topic this source is read from.
    pub fn topic(self) -> &'static str {
        match self {
            Source::Sensor => topic::SENSOR_READINGS,
            Source::Heartbeat => topic::DEVICE,
            Source::Sales => topic::SALES,
            Source::Inventory => topic::INVENTORY,
            Source::Forecast => topic::FORECASTS,
        }
    }

    /// The source of a base topic name.
    pub fn of_topic(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.topic() == name)
    }

    /// The name used in rule files and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Source::Sensor => "sensor",
            Source::Heartbeat => "heartbeat",
            Source::Sales => "sales",
            Source::Inventory => "inventory",
            Source::Forecast => "forecast",
        }
    }

    /// The source named `name` in a rule file.
    pub fn parse(name: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Topics the rules service consumes.
pub fn input_topics() -> Vec<String> {
    Source::ALL.iter().map(|s| s.topic().to_string()).collect()
}

/// Source-specific facts of an observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detail {
    Sensor {
        kind: SensorKind,
        appliance: Option<String>,
    },
    Heartbeat {
        printer: PrinterStatus,
        network: NetworkStatus,
    },
    /// `value` is the net units (refunds and voids negative); `revenue_minor` the net
    /// amount.
    Sale { revenue_minor: i64 },
    /// `value` is the on-hand quantity (snapshot) or the signed change (adjustment).
    Stock { snapshot: bool },
    /// `value` is the days of cover (given, or on hand / mean daily demand of the
    /// next seven days; `f64::MAX` when unknown or without demand: never short).
    Forecast {
        /// Mean demand per day, by days since the epoch.
        daily: Vec<(i32, f64)>,
        on_hand: Option<f64>,
    },
}

/// One input record as the rules see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub source: Source,
    /// Event time (µs since the epoch).
    pub at: i64,
    /// When StorePulse accepted it (µs since the epoch).
    pub received: i64,
    /// Device, terminal or SKU.
    pub entity: String,
    /// The number rules compare: a reading, `app_up` as 1/0, net units, a quantity,
    /// days of cover.
    pub value: f64,
    pub detail: Detail,
}

/// The store an observation belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoreRef {
    pub tenant: String,
    pub store: String,
}

impl StoreRef {
    /// `tenant/store`, the partition key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.store)
    }
}

impl Observation {
    /// The label `key` of this observation, for rule matches: `kind`, `appliance`
    /// (sensors), `printer`, `network` (heartbeats).
    pub fn label(&self, key: &str) -> Option<&str> {
        match (&self.detail, key) {
            (Detail::Sensor { kind, .. }, "kind") => Some(sensor_kind_name(*kind)),
            (Detail::Sensor { appliance, .. }, "appliance") => appliance.as_deref(),
            (Detail::Heartbeat { printer, .. }, "printer") => Some(match printer {
                PrinterStatus::Ok => "ok",
                PrinterStatus::PaperLow => "paper_low",
                PrinterStatus::PaperOut => "paper_out",
                PrinterStatus::Offline => "offline",
                PrinterStatus::Error => "error",
            }),
            (Detail::Heartbeat { network, .. }, "network") => Some(match network {
                NetworkStatus::Online => "online",
                NetworkStatus::Degraded => "degraded",
                NetworkStatus::Offline => "offline",
            }),
            _ => None,
        }
    }

    /// The sensor kind, for sensor observations.
    pub fn sensor_kind(&self) -> Option<SensorKind> {
        match &self.detail {
            Detail::Sensor { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// The rule-file name of a sensor kind.
pub fn sensor_kind_name(kind: SensorKind) -> &'static str {
    match kind {
        SensorKind::Temperature => "temperature",
        SensorKind::Humidity => "humidity",
        SensorKind::Door => "door",
        SensorKind::Power => "power",
    }
}

/// The sensor kind named `name` in a rule file.
pub fn parse_sensor_kind(name: &str) -> Option<SensorKind> {
    [
        SensorKind::Temperature,
        SensorKind::Humidity,
        SensorKind::Door,
        SensorKind::Power,
    ]
    .into_iter()
    .find(|k| sensor_kind_name(*k) == name)
}

/// A decoded input record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    pub store: StoreRef,
    pub observation: Observation,
}

impl From<&SensorReading> for Input {
    fn from(r: &SensorReading) -> Self {
        Input {
            store: store_of(&r.envelope),
            observation: Observation {
                source: Source::Sensor,
                at: r.envelope.occurred_at,
                received: r.envelope.received_at,
                entity: r.device_id.clone(),
                value: r.value,
                detail: Detail::Sensor {
                    kind: r.kind,
                    appliance: r.appliance.clone(),
                },
            },
        }
    }
}

impl From<&PosHeartbeat> for Input {
    fn from(r: &PosHeartbeat) -> Self {
        Input {
            store: store_of(&r.envelope),
            observation: Observation {
                source: Source::Heartbeat,
                at: r.envelope.occurred_at,
                received: r.envelope.received_at,
                entity: r.terminal_id.clone(),
                value: if r.app_up { 1.0 } else { 0.0 },
                detail: Detail::Heartbeat {
                    printer: r.printer,
                    network: r.network,
                },
            },
        }
    }
}

impl From<&SaleTransaction> for Input {
    fn from(r: &SaleTransaction) -> Self {
        let sign = match r.kind {
            SaleKind::Sale => 1.0,
            SaleKind::Refund | SaleKind::Void => -1.0,
        };
        let units: f64 = r.lines.iter().map(|l| l.quantity).sum();
        Input {
            store: store_of(&r.envelope),
            observation: Observation {
                source: Source::Sales,
                at: r.envelope.occurred_at,
                received: r.envelope.received_at,
                entity: r.terminal_id.clone(),
                value: sign * units,
                detail: Detail::Sale {
                    revenue_minor: if sign > 0.0 {
                        r.total_minor
                    } else {
                        -r.total_minor
                    },
                },
            },
        }
    }
}

impl From<&InventoryChange> for Input {
    fn from(r: &InventoryChange) -> Self {
        Input {
            store: store_of(&r.envelope),
            observation: Observation {
                source: Source::Inventory,
                at: r.envelope.occurred_at,
                received: r.envelope.received_at,
                entity: r.sku.clone(),
                value: r.quantity,
                detail: Detail::Stock {
                    snapshot: r.kind == InventoryChangeKind::Snapshot,
                },
            },
        }
    }
}

impl From<&DemandForecast> for Input {
    fn from(r: &DemandForecast) -> Self {
        let daily: Vec<(i32, f64)> = r.days.iter().map(|d| (d.date, d.mean)).collect();
        let days_of_cover = r.days_of_cover.unwrap_or_else(|| {
            let Some(on_hand) = r.on_hand else {
                return f64::MAX;
            };
            let n = daily.len().min(7);
            let mean = if n == 0 {
                0.0
            } else {
                daily.iter().take(n).map(|(_, m)| m).sum::<f64>() / n as f64
            };
            if mean > 0.0 { on_hand / mean } else { f64::MAX }
        });
        Input {
            store: store_of(&r.envelope),
            observation: Observation {
                source: Source::Forecast,
                at: r.envelope.occurred_at,
                received: r.envelope.received_at,
                entity: r.sku.clone(),
                value: days_of_cover,
                detail: Detail::Forecast {
                    daily,
                    on_hand: r.on_hand,
                },
            },
        }
    }
}

fn store_of(e: &storepulse_runtime::records::Envelope) -> StoreRef {
    StoreRef {
        tenant: e.tenant_id.clone(),
        store: e.store_id.clone(),
    }
}
