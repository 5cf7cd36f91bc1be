//! The documented text of every enum value, in one place.
//!
//! Avro enum symbols are the wire form (`PaperLow`, fixed by the `.avsc` files and
//! never renamed); people and SQL see the documented text (`paper_low`). This module
//! is the only mapping between the two: the ingest API parses with it, the read store
//! stores it, and a test reads every value back from Postgres. Nothing else may
//! derive text from an enum (no `format!("{:?}")`), so the API, the topics' docs and
//! the read store cannot drift apart.

use crate::records::{
    AdjustmentReason, AlertSeverity, AlertState, Channel, DeliveryStatus, InventoryChangeKind,
    NetworkStatus, NotifiedState, PrinterStatus, SaleKind, SensorKind, SensorUnit,
};

/// An enum with a documented text for each value.
pub trait Vocabulary: Sized + Copy + PartialEq + std::fmt::Debug + 'static {
    /// What the values are called in messages, e.g. `printer status`.
    const NAME: &'static str;
    /// Every value, in schema symbol order.
    const ALL: &'static [Self];
    /// The documented text of this value.
    fn as_str(self) -> &'static str;
    /// The value whose documented text is `text`, exactly.
    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == text)
    }
    /// Every documented text, comma separated (for error messages).
    fn expected() -> String {
        Self::ALL
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

macro_rules! vocabulary {
    ($ty:ident, $name:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl Vocabulary for $ty {
            const NAME: &'static str = $name;
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $text),+
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary!(SaleKind, "sale kind", { Sale => "sale", Refund => "refund", Void => "void" });
vocabulary!(InventoryChangeKind, "inventory change kind", {
    Snapshot => "snapshot",
    Adjustment => "adjustment",
});
vocabulary!(AdjustmentReason, "adjustment reason", {
    Delivery => "delivery",
    Shrink => "shrink",
    CustomerReturn => "customer_return",
    CountCorrection => "count_correction",
    Transfer => "transfer",
});
vocabulary!(PrinterStatus, "printer status", {
    Ok => "ok",
    PaperLow => "paper_low",
    PaperOut => "paper_out",
    Offline => "offline",
    Error => "error",
});
vocabulary!(NetworkStatus, "network status", {
    Online => "online",
    Degraded => "degraded",
    Offline => "offline",
});
vocabulary!(SensorKind, "sensor kind", {
    Temperature => "temperature",
    Humidity => "humidity",
    Door => "door",
    Power => "power",
});
vocabulary!(SensorUnit, "sensor unit", {
    Celsius => "celsius",
    Percent => "percent",
    OpenClosed => "open_closed",
    OnOff => "on_off",
});
vocabulary!(AlertState, "alert state", { Firing => "firing", Resolved => "resolved" });
vocabulary!(AlertSeverity, "alert severity", {
    Info => "info",
    Warning => "warning",
    Critical => "critical",
});
vocabulary!(NotifiedState, "notified state", { Firing => "firing", Resolved => "resolved" });
vocabulary!(Channel, "channel", {
    Webhook => "webhook",
    WhatsApp => "whatsapp",
    Email => "email",
    Slack => "slack",
});
vocabulary!(DeliveryStatus, "delivery status", {
    Delivered => "delivered",
    Failed => "failed",
    Suppressed => "suppressed",
});

/// The `type` of an event posted to the ingest API: the one list of event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Sale,
    Refund,
    Void,
    StockSnapshot,
    StockAdjustment,
    PosHeartbeat,
    SensorReading,
}

vocabulary!(EventType, "event type", {
    Sale => "sale",
    Refund => "refund",
    Void => "void",
    StockSnapshot => "stock_snapshot",
    StockAdjustment => "stock_adjustment",
    PosHeartbeat => "pos_heartbeat",
    SensorReading => "sensor_reading",
});

impl EventType {
    /// The topic an event of this type is published to.
    pub fn topic(self) -> &'static str {
        use crate::records::topic;
        match self {
            EventType::Sale | EventType::Refund | EventType::Void => topic::SALES,
            EventType::StockSnapshot | EventType::StockAdjustment => topic::INVENTORY,
            EventType::PosHeartbeat => topic::DEVICE,
            EventType::SensorReading => topic::SENSOR_READINGS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{AvroSchema, Schema};

    /// Every Avro symbol has exactly one text, the texts are distinct snake_case, and
    /// `parse` inverts `as_str`.
    fn check<T: Vocabulary + AvroSchema>() {
        let Schema::Enum(e) = T::get_schema() else {
            panic!("{} is not an Avro enum", T::NAME);
        };
        assert_eq!(
            e.symbols.len(),
            T::ALL.len(),
            "{}: a text per symbol",
            T::NAME
        );
        let mut seen = std::collections::HashSet::new();
        for v in T::ALL {
            let text = v.as_str();
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{text}"
            );
            assert!(seen.insert(text), "{text} used twice");
            assert_eq!(T::parse(text), Some(*v));
        }
        assert_eq!(T::parse("PaperLow"), None, "symbols are not texts");
    }

    #[test]
    fn every_enum_has_one_documented_text_per_symbol() {
        check::<SaleKind>();
        check::<InventoryChangeKind>();
        check::<AdjustmentReason>();
        check::<PrinterStatus>();
        check::<NetworkStatus>();
        check::<SensorKind>();
        check::<SensorUnit>();
        check::<AlertState>();
        check::<AlertSeverity>();
        check::<NotifiedState>();
        check::<Channel>();
        check::<DeliveryStatus>();
        assert_eq!(PrinterStatus::PaperLow.to_string(), "paper_low");
    }
}
