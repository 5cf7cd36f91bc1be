//! The rule file: TOML, default rules for every tenant plus per-tenant sections that
//! override a default rule field by field, disable it, or add their own.
//!
//! Guarantees: a file either loads completely into a [`RuleSet`] or is refused with
//! a [`RuleFileError`] naming the tenant, the rule and the field at fault (unknown
//! fields included — a misspelt key is never silently ignored); a loaded set holds
//! only rules whose values are consistent (hysteresis on the right side of its
//! threshold, positive durations, known template placeholders).
//!
//! ```toml
//! [defaults]
//! severity = "warning"
//!
//! [[rules]]
//! name = "freezer-warm"
//! kind = "threshold"
//! match = { source = "sensor", kind = "temperature", labels = { appliance = "freezer" } }
//! above = -15.0
//! for = "10m"
//! clear = -17.0
//! clear_for = "5m"
//!
//! [[tenants.acme.rules]]
//! name = "freezer-warm"   # acme's freezers run warmer: only this field differs
//! above = -12.0
//! ```
//!
//! The complete format is in the README and `config/rules.example.toml`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use storepulse_runtime::records::{AlertSeverity, SensorKind};
use toml::{Table, Value};

use crate::observation::{Observation, Source, parse_sensor_kind};
use crate::span;

/// A rule file that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{reason}", where_(.tenant, .rule, .field))]
pub struct RuleFileError {
    pub tenant: Option<String>,
    pub rule: Option<String>,
    pub field: Option<String>,
    pub reason: String,
}

fn where_(tenant: &Option<String>, rule: &Option<String>, field: &Option<String>) -> String {
    let mut s = String::new();
    if let Some(t) = tenant {
        s.push_str(&format!("tenant {t:?}: "));
    }
    if let Some(r) = rule {
        s.push_str(&format!("rule {r:?}: "));
    }
    if let Some(f) = field {
        s.push_str(&format!("field `{f}`: "));
    }
    s
}

/// A glob over ids: `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<String>,
    anchored_start: bool,
    anchored_end: bool,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        Self {
            parts: text
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            anchored_start: !text.starts_with('*'),
            anchored_end: !text.ends_with('*'),
        }
    }

    pub fn matches(&self, s: &str) -> bool {
        if self.parts.is_empty() {
            // "" matches only ""; "*" (or "**") matches anything.
            return !(self.anchored_start && self.anchored_end) || s.is_empty();
        }
        let mut rest = s;
        let last = self.parts.len() - 1;
        for (i, part) in self.parts.iter().enumerate() {
            if i == 0 && self.anchored_start {
                let Some(r) = rest.strip_prefix(part.as_str()) else {
                    return false;
                };
                rest = r;
                if i == last && self.anchored_end {
                    return rest.is_empty();
                }
                continue;
            }
            if i == last && self.anchored_end {
                return rest.len() >= part.len() && rest.ends_with(part.as_str());
            }
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Which observations a rule looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    /// `None`: every source (store-wide absence only).
    pub source: Option<Source>,
    pub sensor_kind: Option<SensorKind>,
    /// Store ids; empty = every store.
    pub stores: Vec<Pattern>,
    /// Entity ids (device, terminal, SKU); empty = every entity.
    pub entities: Vec<Pattern>,
    /// Observation labels (`appliance`, `printer`, `network`, `kind`).
    pub labels: Vec<(String, Pattern)>,
}

impl Matcher {
    pub fn matches_store(&self, store: &str) -> bool {
        self.stores.is_empty() || self.stores.iter().any(|p| p.matches(store))
    }

    /// Whether `o` is one of this rule's observations (the store checked apart).
    pub fn matches(&self, o: &Observation) -> bool {
        if self.source.is_some_and(|s| s != o.source) {
            return false;
        }
        if let Some(k) = self.sensor_kind
            && o.sensor_kind() != Some(k)
        {
            return false;
        }
        if !self.entities.is_empty() && !self.entities.iter().any(|p| p.matches(&o.entity)) {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, p)| o.label(k).is_some_and(|v| p.matches(v)))
    }
}

/// A threshold with hysteresis: fires once the value is beyond `fire` for `hold`,
/// resolves once it is beyond `clear` (on the good side) for `clear_hold`. Values
/// between the two change nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// True: bad when `value > fire`, clear when `value < clear`. False: bad when
    /// `value < fire`, clear when `value > clear`.
    pub above: bool,
    pub fire: f64,
    pub clear: f64,
    /// `for`, µs.
    pub hold: i64,
    /// `clear_for`, µs.
    pub clear_hold: i64,
}

impl Hysteresis {
    pub fn breached(&self, v: f64) -> bool {
        if self.above {
            v > self.fire
        } else {
            v < self.fire
        }
    }

    pub fn cleared(&self, v: f64) -> bool {
        if self.above {
            v < self.clear
        } else {
            v > self.clear
        }
    }
}

/// Where a stock rule looks.
#[derive(Debug, Clone, PartialEq)]
pub enum StockMeasure {
    /// On hand (from `pos.inventory.v1`) below the reorder point.
    OnHand,
    /// Days of cover (from `forecasts.v1`) below the lead time in days.
    DaysOfCover,
}

/// What a sales-anomaly rule measures per hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesMeasure {
    Units,
    Revenue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SalesAnomalySpec {
    pub measure: SalesMeasure,
    /// An hour is low when actual < ratio × expected.
    pub ratio: f64,
    /// A low stretch ends with an hour of actual ≥ clear_ratio × expected.
    pub clear_ratio: f64,
    /// Hours expected below this are not judged (too little to tell).
    pub min_expected: f64,
    /// Consecutive low hours before firing.
    pub hours: u32,
    /// Weight of the newest hour in the usual level for its hour of the week.
    pub alpha: f64,
    /// Hours of the week seen at least this many times before the usual level counts.
    pub min_history: u32,
}

/// A recurring masked window (e.g. defrost): from `offset` after midnight UTC,
/// every `every`, lasting `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recurring {
    pub every: i64,
    pub duration: i64,
    pub offset: i64,
}

impl Recurring {
    /// µs of `[from, to)` inside the window.
    pub fn overlap(&self, from: i64, to: i64) -> i64 {
        if to <= from || self.every <= 0 {
            return 0;
        }
        let mut total = 0;
        let k0 = (from - self.offset).div_euclid(self.every);
        let mut k = k0;
        loop {
            let start = self.offset + k * self.every;
            if start >= to {
                break;
            }
            let end = start + self.duration;
            total += (end.min(to) - start.max(from)).max(0);
            k += 1;
        }
        total
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColdChainSpec {
    /// Product limit, °C: exposure accrues while above it.
    pub limit: f64,
    /// Degree-minutes above the limit that make an incident an alert.
    pub budget: f64,
    /// Time at or below the limit that ends an incident.
    pub clear_for: i64,
    /// Door sensors whose open periods mask exposure (ids); empty = every door sensor.
    pub doors: Vec<Pattern>,
    /// Masked time after a door closes.
    pub door_grace: i64,
    /// Scheduled defrost cycles, masked.
    pub defrost: Vec<Recurring>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    Threshold(Hysteresis),
    /// `per_store`: the store as a whole (any matching observation counts).
    Absence {
        timeout: i64,
        per_store: bool,
    },
    /// The change of the value over `window`, against the hysteresis.
    RateOfChange {
        window: i64,
        hysteresis: Hysteresis,
    },
    /// `hysteresis.fire` is the default level; `per_sku` overrides it (and the clear
    /// level by the same offset).
    Stock {
        measure: StockMeasure,
        hysteresis: Hysteresis,
        per_sku: HashMap<String, f64>,
    },
    SalesAnomaly(SalesAnomalySpec),
    ColdChain(ColdChainSpec),
}

impl Spec {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Spec::Threshold(_) => "threshold",
            Spec::Absence { .. } => "absence",
            Spec::RateOfChange { .. } => "rate_of_change",
            Spec::Stock { .. } => "stock",
            Spec::SalesAnomaly(_) => "sales_anomaly",
            Spec::ColdChain(_) => "cold_chain",
        }
    }

    /// The threshold a message shows as `{threshold}`.
    pub fn threshold(&self) -> Option<f64> {
        match self {
            Spec::Threshold(h) | Spec::RateOfChange { hysteresis: h, .. } => Some(h.fire),
            Spec::Stock { hysteresis, .. } => Some(hysteresis.fire),
            Spec::SalesAnomaly(s) => Some(s.ratio),
            Spec::ColdChain(c) => Some(c.budget),
            Spec::Absence { timeout, .. } => Some(*timeout as f64 / span::MINUTE as f64),
        }
    }
}

/// When a rule is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum During {
    Always,
    /// Only while the store is open (store calendar): outside, observations do not
    /// count and silence is not suspicious.
    OpenHours,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub spec: Spec,
    pub matcher: Matcher,
    pub severity: AlertSeverity,
    pub labels: BTreeMap<String, String>,
    pub message: Template,
    pub during: During,
}

/// A message with `{placeholders}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<TemplatePart>,
}

#[derive(Debug, Clone, PartialEq)]
enum TemplatePart {
    Text(String),
    Var(String),
}

/// Placeholders every message may use (besides `{label.NAME}`).
pub const PLACEHOLDERS: [&str; 9] = [
    "rule",
    "tenant",
    "store",
    "entity",
    "value",
    "threshold",
    "since",
    "severity",
    "duration",
];

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("unclosed `{{` in {text:?}"));
            };
            let name = after[..close].trim();
            let known = PLACEHOLDERS.contains(&name)
                || name.strip_prefix("label.").is_some_and(|l| !l.is_empty());
            if !known {
                return Err(format!(
                    "unknown placeholder {{{name}}} (known: {}, label.NAME)",
                    PLACEHOLDERS.join(", ")
                ));
            }
            parts.push(TemplatePart::Var(name.to_string()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The message with each placeholder replaced by `value(name)` (empty if none).
    pub fn render(&self, value: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                TemplatePart::Text(t) => out.push_str(t),
                TemplatePart::Var(v) => out.push_str(&value(v).unwrap_or_default()),
            }
        }
        out
    }
}

/// The rules of one tenant, indexed by source.
#[derive(Debug, Clone, Default)]
pub struct TenantRules {
    /// Rules reading one source, by [`Source::index`].
    pub by_source: [Vec<Arc<Rule>>; 5],
    /// Store-wide absence rules over every source.
    pub any_source: Vec<Arc<Rule>>,
    /// Every rule, by name.
    pub by_name: crate::engine::FastMap<String, Arc<Rule>>,
}

impl TenantRules {
    fn new(rules: Vec<Rule>) -> Self {
        let mut t = TenantRules::default();
        for r in rules {
            let r = Arc::new(r);
            match r.matcher.source {
                Some(s) => t.by_source[s.index()].push(r.clone()),
                None => t.any_source.push(r.clone()),
            }
            t.by_name.insert(r.name.clone(), r);
        }
        t
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Every rule of a file: the defaults, and each tenant's merged set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    defaults: TenantRules,
    tenants: HashMap<String, TenantRules>,
}

impl RuleSet {
    /// The rules that apply to `tenant`.
    pub fn for_tenant(&self, tenant: &str) -> &TenantRules {
        self.tenants.get(tenant).unwrap_or(&self.defaults)
    }

    /// Rules in the defaults plus every tenant-specific rule set.
    pub fn count(&self) -> usize {
        self.defaults.len() + self.tenants.values().map(TenantRules::len).sum::<usize>()
    }

    /// Tenants with their own section.
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// Reads and validates the rule file at `path`.
    pub fn load(path: &Path) -> Result<Self, RuleFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuleFileError {
            tenant: None,
            rule: None,
            field: None,
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(&text)
    }

    /// Validates rule-file text.
    pub fn parse(text: &str) -> Result<Self, RuleFileError> {
        let doc: Table = text.parse().map_err(|e: toml::de::Error| RuleFileError {
            tenant: None,
            rule: None,
            field: None,
            reason: format!("not valid TOML: {}", e.to_string().trim()),
        })?;
        let top = |field: &str, reason: String| RuleFileError {
            tenant: None,
            rule: None,
            field: Some(field.into()),
            reason,
        };
        for key in doc.keys() {
            if !["defaults", "rules", "tenants"].contains(&key.as_str()) {
                return Err(top(
                    key,
                    "unknown section (known: defaults, rules, tenants)".into(),
                ));
            }
        }
        let defaults = match doc.get("defaults") {
            None => Table::new(),
            Some(Value::Table(t)) => t.clone(),
            Some(_) => return Err(top("defaults", "must be a table".into())),
        };
        for key in defaults.keys() {
            if !["severity", "labels", "during"].contains(&key.as_str()) {
                return Err(top(
                    &format!("defaults.{key}"),
                    "unknown field (known: severity, labels, during)".into(),
                ));
            }
        }
        let base = rule_tables(doc.get("rules"), None)?;
        let mut seen = BTreeSet::new();
        for (name, _) in &base {
            if !seen.insert(name.clone()) {
                return Err(RuleFileError {
                    tenant: None,
                    rule: Some(name.clone()),
                    field: Some("name".into()),
                    reason: "defined twice".into(),
                });
            }
        }
        let compile_all = |tables: &[(String, Table)],
                           tenant: Option<&str>|
         -> Result<Vec<Rule>, RuleFileError> {
            let mut rules = Vec::new();
            for (name, t) in tables {
                let mut merged = defaults.clone();
                for (k, v) in t {
                    merged.insert(k.clone(), v.clone());
                }
                if let Some(rule) = compile(name, merged, tenant)? {
                    rules.push(rule);
                }
            }
            Ok(rules)
        };
        let default_rules = compile_all(&base, None)?;
        let mut tenants = HashMap::new();
        match doc.get("tenants") {
            None => {}
            Some(Value::Table(ts)) => {
                for (tenant, section) in ts {
                    let Value::Table(section) = section else {
                        return Err(top(&format!("tenants.{tenant}"), "must be a table".into()));
                    };
                    for key in section.keys() {
                        if key != "rules" {
                            return Err(RuleFileError {
                                tenant: Some(tenant.clone()),
                                rule: None,
                                field: Some(key.clone()),
                                reason: "unknown field (known: rules)".into(),
                            });
                        }
                    }
                    let own = rule_tables(section.get("rules"), Some(tenant))?;
                    // Overrides merge over the default rule of the same name.
                    let mut merged: Vec<(String, Table)> = base.clone();
                    let mut seen = BTreeSet::new();
                    for (name, t) in own {
                        if !seen.insert(name.clone()) {
                            return Err(RuleFileError {
                                tenant: Some(tenant.clone()),
                                rule: Some(name),
                                field: Some("name".into()),
                                reason: "defined twice in this tenant".into(),
                            });
                        }
                        match merged.iter_mut().find(|(n, _)| *n == name) {
                            Some((_, existing)) => {
                                for (k, v) in t {
                                    existing.insert(k, v);
                                }
                            }
                            None => merged.push((name, t)),
                        }
                    }
                    tenants.insert(
                        tenant.clone(),
                        TenantRules::new(compile_all(&merged, Some(tenant))?),
                    );
                }
            }
            Some(_) => return Err(top("tenants", "must be a table of tenants".into())),
        }
        Ok(RuleSet {
            defaults: TenantRules::new(default_rules),
            tenants,
        })
    }
}

/// The `[[rules]]` tables of a section, each with its name.
fn rule_tables(
    v: Option<&Value>,
    tenant: Option<&str>,
) -> Result<Vec<(String, Table)>, RuleFileError> {
    let err = |rule: Option<String>, field: &str, reason: &str| RuleFileError {
        tenant: tenant.map(str::to_string),
        rule,
        field: Some(field.into()),
        reason: reason.into(),
    };
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return Err(err(None, "rules", "must be an array of tables ([[rules]])"));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Table(t) = item else {
            return Err(err(None, &format!("rules[{i}]"), "must be a table"));
        };
        let name = match t.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::String(_)) => {
                return Err(err(None, &format!("rules[{i}].name"), "must not be empty"));
            }
            Some(_) => return Err(err(None, &format!("rules[{i}].name"), "must be a string")),
            None => return Err(err(None, &format!("rules[{i}].name"), "is required")),
        };
        let name_ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(err(
                Some(name),
                "name",
                "use letters, digits, '-', '_' and '.' only",
            ));
        }
        out.push((name, t.clone()));
    }
    Ok(out)
}

/// Typed, consuming access to one rule's table; errors name the rule and field.
struct Fields<'a> {
    table: Table,
    rule: &'a str,
    tenant: Option<&'a str>,
    prefix: String,
}

impl<'a> Fields<'a> {
    fn err(&self, field: &str, reason: impl Into<String>) -> RuleFileError {
        RuleFileError {
            tenant: self.tenant.map(str::to_string),
            rule: Some(self.rule.to_string()),
            field: Some(format!("{}{field}", self.prefix)),
            reason: reason.into(),
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.table.remove(key)
    }

    fn f64(&mut self, key: &str) -> Result<Option<f64>, RuleFileError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Float(f)) if f.is_finite() => Ok(Some(f)),
            Some(Value::Integer(i)) => Ok(Some(i as f64)),
            Some(v) => Err(self.err(key, format!("expected a number, found {}", describe(&v)))),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, RuleFileError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(key, format!("expected a string, found {}", describe(&v)))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, RuleFileError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(b)),
            Some(v) => Err(self.err(
                key,
                format!("expected true or false, found {}", describe(&v)),
            )),
        }
    }

    fn span(&mut self, key: &str) -> Result<Option<i64>, RuleFileError> {
        match self.string(key)? {
            None => Ok(None),
            Some(s) => span::parse(&s).map(Some).map_err(|e| self.err(key, e)),
        }
    }

    /// A duration that may be zero, `default` when absent.
    fn span_at_least_zero(&mut self, key: &str, default: i64) -> Result<i64, RuleFileError> {
        match self.span(key)? {
            Some(v) => positive(self, key, v, true),
            None => Ok(default),
        }
    }

    fn strings(&mut self, key: &str) -> Result<Vec<String>, RuleFileError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s]),
            Some(Value::Array(a)) => a
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    v => Err(self.err(key, format!("expected strings, found {}", describe(&v)))),
                })
                .collect(),
            Some(v) => Err(self.err(
                key,
                format!(
                    "expected a string or a list of strings, found {}",
                    describe(&v)
                ),
            )),
        }
    }

    fn string_map(&mut self, key: &str) -> Result<BTreeMap<String, String>, RuleFileError> {
        match self.take(key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Table(t)) => t
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    v => Err(self.err(
                        &format!("{key}.{k}"),
                        format!("expected a string, found {}", describe(&v)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a table, found {}", describe(&v)))),
        }
    }

    fn number_map(&mut self, key: &str) -> Result<HashMap<String, f64>, RuleFileError> {
        match self.take(key) {
            None => Ok(HashMap::new()),
            Some(Value::Table(t)) => t
                .into_iter()
                .map(|(k, v)| match v {
                    Value::Float(f) if f.is_finite() => Ok((k, f)),
                    Value::Integer(i) => Ok((k, i as f64)),
                    v => Err(self.err(
                        &format!("{key}.{k}"),
                        format!("expected a number, found {}", describe(&v)),
                    )),
                })
                .collect(),
            Some(v) => Err(self.err(key, format!("expected a table, found {}", describe(&v)))),
        }
    }

    fn sub(&mut self, key: &str) -> Result<Option<Fields<'a>>, RuleFileError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(Fields {
                table: t,
                rule: self.rule,
                tenant: self.tenant,
                prefix: format!("{}{key}.", self.prefix),
            })),
            Some(v) => Err(self.err(key, format!("expected a table, found {}", describe(&v)))),
        }
    }

    fn subs(&mut self, key: &str) -> Result<Vec<Fields<'a>>, RuleFileError> {
        let items = match self.take(key) {
            None => return Ok(Vec::new()),
            Some(Value::Table(t)) => vec![t],
            Some(Value::Array(a)) => {
                let mut v = Vec::new();
                for (i, item) in a.into_iter().enumerate() {
                    match item {
                        Value::Table(t) => v.push(t),
                        other => {
                            return Err(self.err(
                                &format!("{key}[{i}]"),
                                format!("expected a table, found {}", describe(&other)),
                            ));
                        }
                    }
                }
                v
            }
            Some(v) => Err(self.err(key, format!("expected tables, found {}", describe(&v))))?,
        };
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, t)| Fields {
                table: t,
                rule: self.rule,
                tenant: self.tenant,
                prefix: format!("{}{key}[{i}].", self.prefix),
            })
            .collect())
    }

    /// Fails on any field not taken.
    fn finish(self, known: &[&str]) -> Result<(), RuleFileError> {
        if let Some(k) = self.table.keys().next() {
            return Err(self.err(
                k,
                format!(
                    "unknown field for this rule (known here: {})",
                    known.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(f) => format!("number {f}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(d) => format!("datetime {d}"),
        Value::Array(_) => "a list".into(),
        Value::Table(_) => "a table".into(),
    }
}

/// Checks that a duration is positive (or zero where `zero_ok`).
fn positive(f: &Fields<'_>, key: &str, v: i64, zero_ok: bool) -> Result<i64, RuleFileError> {
    if v < 0 || (!zero_ok && v == 0) {
        return Err(f.err(
            key,
            if zero_ok {
                "must not be negative"
            } else {
                "must be more than 0"
            },
        ));
    }
    Ok(v)
}

/// A hysteresis from `above`/`below`, `clear`, `for`, `clear_for`.
fn hysteresis(
    f: &mut Fields<'_>,
    default_hold: i64,
    default_clear_hold: Option<i64>,
) -> Result<Hysteresis, RuleFileError> {
    let above = f.f64("above")?;
    let below = f.f64("below")?;
    let (is_above, fire, key) = match (above, below) {
        (Some(a), None) => (true, a, "above"),
        (None, Some(b)) => (false, b, "below"),
        (Some(_), Some(_)) => return Err(f.err("below", "give `above` or `below`, not both")),
        (None, None) => return Err(f.err("above", "is required (or `below`)")),
    };
    let clear = f.f64("clear")?.unwrap_or(fire);
    if is_above && clear > fire {
        return Err(f.err(
            "clear",
            format!("{clear} is above the threshold `{key}` = {fire}; a clear level of an `above` rule must be at or below it"),
        ));
    }
    if !is_above && clear < fire {
        return Err(f.err(
            "clear",
            format!("{clear} is below the threshold `{key}` = {fire}; a clear level of a `below` rule must be at or above it"),
        ));
    }
    let hold = match f.span("for")? {
        Some(v) => positive(f, "for", v, true)?,
        None => default_hold,
    };
    let clear_hold = match f.span("clear_for")? {
        Some(v) => positive(f, "clear_for", v, true)?,
        None => default_clear_hold.unwrap_or(hold),
    };
    Ok(Hysteresis {
        above: is_above,
        fire,
        clear,
        hold,
        clear_hold,
    })
}

const COMMON: [&str; 9] = [
    "name",
    "kind",
    "match",
    "severity",
    "labels",
    "message",
    "enabled",
    "during",
    "description",
];

/// Validates one (merged) rule table; `None` when disabled.
fn compile(name: &str, table: Table, tenant: Option<&str>) -> Result<Option<Rule>, RuleFileError> {
    let mut f = Fields {
        table,
        rule: name,
        tenant,
        prefix: String::new(),
    };
    f.take("name");
    f.take("description");
    let enabled = f.bool("enabled")?.unwrap_or(true);
    let kind = f.string("kind")?.ok_or_else(|| {
        f.err(
            "kind",
            "is required (threshold, absence, rate_of_change, stock, sales_anomaly, cold_chain)",
        )
    })?;
    let severity = match f.string("severity")?.as_deref() {
        None | Some("warning") => AlertSeverity::Warning,
        Some("info") => AlertSeverity::Info,
        Some("critical") => AlertSeverity::Critical,
        Some(other) => {
            return Err(f.err(
                "severity",
                format!("{other:?} is not one of info, warning, critical"),
            ));
        }
    };
    let labels = f.string_map("labels")?;
    // Room for the entity's own labels (appliance, kind) within the topic contract.
    let max = storepulse_runtime::contract::MAX_LABELS - 2;
    if labels.len() > max {
        return Err(f.err("labels", format!("at most {max} labels")));
    }
    for (k, v) in &labels {
        let bad = storepulse_runtime::contract::check_text("labels", k).is_err()
            || v.len() > storepulse_runtime::contract::MAX_ID_LEN
            || v.contains('\0');
        if bad {
            return Err(f.err(
                &format!("labels.{k}"),
                "names and values must be non-empty, at most 128 bytes, without NUL",
            ));
        }
    }
    let during = match f.string("during")?.as_deref() {
        None | Some("always") => During::Always,
        Some("open_hours") => During::OpenHours,
        Some(other) => {
            return Err(f.err(
                "during",
                format!("{other:?} is not one of always, open_hours"),
            ));
        }
    };
    let message = f.string("message")?;
    let mut m = f
        .sub("match")?
        .ok_or_else(|| f.err("match", "is required, e.g. match = { source = \"sensor\" }"))?;
    let source_name = m.string("source")?.ok_or_else(|| {
        m.err(
            "source",
            "is required (sensor, heartbeat, sales, inventory, forecast, any)",
        )
    })?;
    let source = if source_name == "any" {
        None
    } else {
        Some(Source::parse(&source_name).ok_or_else(|| {
            m.err(
                "source",
                format!("{source_name:?} is not one of sensor, heartbeat, sales, inventory, forecast, any"),
            )
        })?)
    };
    let sensor_kind = match m.string("kind")? {
        None => None,
        Some(k) => {
            if source != Some(Source::Sensor) {
                return Err(m.err("kind", "only sensor rules match on a sensor kind"));
            }
            Some(parse_sensor_kind(&k).ok_or_else(|| {
                m.err(
                    "kind",
                    format!("{k:?} is not one of temperature, humidity, door, power"),
                )
            })?)
        }
    };
    let stores: Vec<Pattern> = m
        .strings("stores")?
        .iter()
        .map(|s| Pattern::new(s))
        .collect();
    let entities: Vec<Pattern> = m
        .strings("entities")?
        .iter()
        .map(|s| Pattern::new(s))
        .collect();
    let labels_match: Vec<(String, Pattern)> = m
        .string_map("labels")?
        .into_iter()
        .map(|(k, v)| (k, Pattern::new(&v)))
        .collect();
    for (k, _) in &labels_match {
        let valid = match source {
            Some(Source::Sensor) => ["appliance", "kind"].contains(&k.as_str()),
            Some(Source::Heartbeat) => ["printer", "network"].contains(&k.as_str()),
            _ => false,
        };
        if !valid {
            return Err(m.err(
                &format!("labels.{k}"),
                "no such label on this source (sensor: appliance, kind; heartbeat: printer, network)",
            ));
        }
    }
    m.finish(&["source", "kind", "stores", "entities", "labels"])?;
    let matcher = Matcher {
        source,
        sensor_kind,
        stores,
        entities,
        labels: labels_match,
    };
    let need_source = |f: &Fields<'_>, allowed: &[Source]| -> Result<(), RuleFileError> {
        match source {
            Some(s) if allowed.contains(&s) => Ok(()),
            _ => Err(f.err(
                "match.source",
                format!(
                    "a {kind} rule reads {}",
                    allowed
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    };
    let (spec, known): (Spec, &[&str]) = match kind.as_str() {
        "threshold" => {
            need_source(
                &f,
                &[
                    Source::Sensor,
                    Source::Heartbeat,
                    Source::Sales,
                    Source::Inventory,
                    Source::Forecast,
                ],
            )?;
            (
                Spec::Threshold(hysteresis(&mut f, 0, None)?),
                &["above", "below", "clear", "for", "clear_for"],
            )
        }
        "absence" => {
            let timeout = f
                .span("timeout")?
                .ok_or_else(|| f.err("timeout", "is required, e.g. timeout = \"2m\""))?;
            let timeout = positive(&f, "timeout", timeout, false)?;
            let per_store = match f.string("per")?.as_deref() {
                None | Some("entity") => false,
                Some("store") => true,
                Some(other) => {
                    return Err(f.err("per", format!("{other:?} is not one of entity, store")));
                }
            };
            if source.is_none() && !per_store {
                return Err(f.err("per", "match.source = \"any\" needs per = \"store\""));
            }
            (Spec::Absence { timeout, per_store }, &["timeout", "per"])
        }
        "rate_of_change" => {
            need_source(&f, &[Source::Sensor])?;
            let window = f
                .span("window")?
                .ok_or_else(|| f.err("window", "is required, e.g. window = \"10m\""))?;
            let window = positive(&f, "window", window, false)?;
            let rise = f.f64("rise")?;
            let fall = f.f64("fall")?;
            let (above, fire, key) = match (rise, fall) {
                (Some(r), None) => (true, r, "rise"),
                (None, Some(d)) => (false, -d, "fall"),
                (Some(_), Some(_)) => return Err(f.err("fall", "give `rise` or `fall`, not both")),
                (None, None) => return Err(f.err("rise", "is required (or `fall`)")),
            };
            if (above && fire <= 0.0) || (!above && fire >= 0.0) {
                return Err(f.err(key, "must be more than 0 (a change per window)"));
            }
            let clear_mag = f.f64("clear")?;
            let clear = clear_mag.map_or(fire, |c| if above { c } else { -c });
            if (above && clear > fire) || (!above && clear < fire) {
                return Err(f.err("clear", format!("must be at most `{key}`")));
            }
            let hold = f.span_at_least_zero("for", 0)?;
            let clear_hold = f.span_at_least_zero("clear_for", window)?;
            (
                Spec::RateOfChange {
                    window,
                    hysteresis: Hysteresis {
                        above,
                        fire,
                        clear,
                        hold,
                        clear_hold,
                    },
                },
                &["window", "rise", "fall", "clear", "for", "clear_for"],
            )
        }
        "stock" => {
            need_source(&f, &[Source::Inventory, Source::Forecast])?;
            let (measure, key) = if source == Some(Source::Inventory) {
                (StockMeasure::OnHand, "reorder_point")
            } else {
                (StockMeasure::DaysOfCover, "lead_time_days")
            };
            let other = if key == "reorder_point" {
                "lead_time_days"
            } else {
                "reorder_point"
            };
            if f.table.contains_key(other) {
                return Err(f.err(other, format!("a stock rule on {source_name} uses `{key}`")));
            }
            let level = f.f64(key)?.ok_or_else(|| f.err(key, "is required"))?;
            let per_sku = f.number_map("per_sku")?;
            let clear = f.f64("clear")?.unwrap_or(level);
            if clear < level {
                return Err(f.err("clear", format!("must be at least `{key}` = {level}")));
            }
            let hold = f.span_at_least_zero("for", 0)?;
            let clear_hold = f.span_at_least_zero("clear_for", 0)?;
            (
                Spec::Stock {
                    measure,
                    hysteresis: Hysteresis {
                        above: false,
                        fire: level,
                        clear,
                        hold,
                        clear_hold,
                    },
                    per_sku,
                },
                &[
                    "reorder_point",
                    "lead_time_days",
                    "per_sku",
                    "clear",
                    "for",
                    "clear_for",
                ],
            )
        }
        "sales_anomaly" => {
            need_source(&f, &[Source::Sales])?;
            let measure = match f.string("measure")?.as_deref() {
                None | Some("units") => SalesMeasure::Units,
                Some("revenue") => SalesMeasure::Revenue,
                Some(o) => {
                    return Err(f.err("measure", format!("{o:?} is not one of units, revenue")));
                }
            };
            let ratio = f.f64("ratio")?.unwrap_or(0.3);
            if !(0.0..1.0).contains(&ratio) || ratio == 0.0 {
                return Err(f.err("ratio", "must be between 0 and 1 (exclusive)"));
            }
            let clear_ratio = f.f64("clear_ratio")?.unwrap_or((ratio * 2.0).min(1.0));
            if clear_ratio < ratio {
                return Err(f.err("clear_ratio", format!("must be at least `ratio` = {ratio}")));
            }
            let min_expected = f.f64("min_expected")?.unwrap_or(5.0);
            let hours = f.f64("hours")?.unwrap_or(1.0);
            if hours < 1.0 || hours.fract() != 0.0 {
                return Err(f.err("hours", "must be a whole number of hours, at least 1"));
            }
            let alpha = f.f64("alpha")?.unwrap_or(0.3);
            if !(alpha > 0.0 && alpha <= 1.0) {
                return Err(f.err("alpha", "must be in (0, 1]"));
            }
            let min_history = f.f64("min_history")?.unwrap_or(2.0);
            if min_history < 1.0 || min_history.fract() != 0.0 {
                return Err(f.err("min_history", "must be a whole number, at least 1"));
            }
            (
                Spec::SalesAnomaly(SalesAnomalySpec {
                    measure,
                    ratio,
                    clear_ratio,
                    min_expected,
                    hours: hours as u32,
                    alpha,
                    min_history: min_history as u32,
                }),
                &[
                    "measure",
                    "ratio",
                    "clear_ratio",
                    "min_expected",
                    "hours",
                    "alpha",
                    "min_history",
                ],
            )
        }
        "cold_chain" => {
            need_source(&f, &[Source::Sensor])?;
            if sensor_kind.is_some_and(|k| k != SensorKind::Temperature) {
                return Err(f.err("match.kind", "a cold_chain rule reads temperature"));
            }
            let limit = f
                .f64("limit")?
                .ok_or_else(|| f.err("limit", "is required (°C)"))?;
            let budget = f
                .f64("budget")?
                .ok_or_else(|| f.err("budget", "is required (degree-minutes above the limit)"))?;
            if budget <= 0.0 {
                return Err(f.err("budget", "must be more than 0"));
            }
            let clear_for = f.span_at_least_zero("clear_for", 10 * span::MINUTE)?;
            let doors: Vec<Pattern> = f
                .strings("doors")?
                .iter()
                .map(|s| Pattern::new(s))
                .collect();
            let door_grace = f.span_at_least_zero("door_grace", 5 * span::MINUTE)?;
            let mut defrost = Vec::new();
            for mut d in f.subs("defrost")? {
                let every = d
                    .span("every")?
                    .ok_or_else(|| d.err("every", "is required, e.g. every = \"6h\""))?;
                let every = positive(&d, "every", every, false)?;
                let duration = d
                    .span("duration")?
                    .ok_or_else(|| d.err("duration", "is required, e.g. duration = \"30m\""))?;
                if duration <= 0 || duration >= every {
                    return Err(d.err("duration", "must be more than 0 and less than `every`"));
                }
                let offset = d.span("offset")?.unwrap_or(0);
                d.finish(&["every", "duration", "offset"])?;
                defrost.push(Recurring {
                    every,
                    duration,
                    offset,
                });
            }
            (
                Spec::ColdChain(ColdChainSpec {
                    limit,
                    budget,
                    clear_for,
                    doors,
                    door_grace,
                    defrost,
                }),
                &[
                    "limit",
                    "budget",
                    "clear_for",
                    "doors",
                    "door_grace",
                    "defrost",
                ],
            )
        }
        other => {
            return Err(f.err(
                "kind",
                format!("{other:?} is not one of threshold, absence, rate_of_change, stock, sales_anomaly, cold_chain"),
            ));
        }
    };
    let mut all_known: Vec<&str> = COMMON.to_vec();
    all_known.extend_from_slice(known);
    if matches!(
        spec,
        Spec::Absence {
            per_store: true,
            ..
        }
    ) && !matcher.entities.is_empty()
    {
        return Err(f.err(
            "match.entities",
            "a per-store absence rule watches the whole store",
        ));
    }
    let message = match message {
        Some(m) => Template::parse(&m).map_err(|e| f.err("message", e))?,
        None => Template::parse(default_message(&spec)).map_err(|e| f.err("message", e))?,
    };
    f.finish(&all_known)?;
    if !enabled {
        return Ok(None);
    }
    Ok(Some(Rule {
        name: name.to_string(),
        spec,
        matcher,
        severity,
        labels,
        message,
        during,
    }))
}

/// The message of a rule that gives none.
fn default_message(spec: &Spec) -> &'static str {
    match spec {
        Spec::Threshold(_) => {
            "{rule}: {entity} in {store} is at {value} (threshold {threshold}) since {since}"
        }
        Spec::Absence {
            per_store: true, ..
        } => "{rule}: store {store} silent since {since}",
        Spec::Absence { .. } => "{rule}: {entity} in {store} silent since {since}",
        Spec::RateOfChange { .. } => {
            "{rule}: {entity} in {store} changed by {value} within the window (limit {threshold})"
        }
        Spec::Stock { .. } => "{rule}: {entity} in {store} at {value} (limit {threshold})",
        Spec::SalesAnomaly(_) => {
            "{rule}: sales in {store} at {value} of the expected level since {since}"
        }
        Spec::ColdChain(_) => {
            "{rule}: {entity} in {store} exposed {value} degree-minutes above its limit since {since}"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[defaults]
severity = "warning"
labels = { team = "ops" }

[[rules]]
name = "freezer-warm"
kind = "threshold"
match = { source = "sensor", kind = "temperature", labels = { appliance = "freezer" } }
above = -15
for = "10m"
clear = -17.0
clear_for = "5m"
severity = "critical"
message = "{entity} at {value} °C in {store} ({label.appliance})"

[[rules]]
name = "pos-offline"
kind = "absence"
match = { source = "heartbeat" }
timeout = "2m"

[[tenants.acme.rules]]
name = "freezer-warm"
above = -12

[[tenants.acme.rules]]
name = "pos-offline"
enabled = false

[[tenants.acme.rules]]
name = "store-silent"
kind = "absence"
match = { source = "any" }
per = "store"
timeout = "15m"
"#;

    #[test]
    fn defaults_apply_and_tenants_override_field_by_field() {
        let set = RuleSet::parse(GOOD).expect("valid");
        let other = set.for_tenant("someone");
        assert_eq!(other.len(), 2);
        let warm = &other.by_name["freezer-warm"];
        let Spec::Threshold(h) = warm.spec else {
            panic!("threshold")
        };
        assert_eq!(
            (h.fire, h.clear, h.hold, h.clear_hold),
            (-15.0, -17.0, 600_000_000, 300_000_000)
        );
        assert_eq!(warm.severity, AlertSeverity::Critical);
        assert_eq!(warm.labels["team"], "ops");

        let acme = set.for_tenant("acme");
        assert_eq!(acme.len(), 2, "pos-offline disabled, store-silent added");
        let Spec::Threshold(h) = acme.by_name["freezer-warm"].spec else {
            panic!("threshold")
        };
        assert_eq!((h.fire, h.clear, h.hold), (-12.0, -17.0, 600_000_000));
        assert_eq!(acme.any_source.len(), 1);
        assert!(!acme.by_name.contains_key("pos-offline"));
    }

    fn error_of(text: &str) -> RuleFileError {
        RuleSet::parse(text).expect_err("invalid")
    }

    #[test]
    fn errors_name_the_rule_and_the_field() {
        let e = error_of(&GOOD.replace("above = -15\n", "abvoe = -15\nabove = -15\n"));
        assert_eq!(e.rule.as_deref(), Some("freezer-warm"));
        assert_eq!(e.field.as_deref(), Some("abvoe"));
        assert!(e.to_string().contains("unknown field"), "{e}");

        let e = error_of(&GOOD.replace("clear = -17.0", "clear = -10.0"));
        assert_eq!(e.field.as_deref(), Some("clear"));
        assert!(
            e.to_string()
                .starts_with("rule \"freezer-warm\": field `clear`:"),
            "{e}"
        );

        let e = error_of(&GOOD.replace("for = \"10m\"", "for = \"10 minutes\""));
        assert_eq!(e.field.as_deref(), Some("for"));

        let e = error_of(&GOOD.replace("above = -12", "above = \"warm\""));
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.rule.as_deref(), Some("freezer-warm"));
        assert_eq!(e.field.as_deref(), Some("above"));
        assert!(e.reason.contains("expected a number, found string"), "{e}");

        let e = error_of(&GOOD.replace("source = \"heartbeat\"", "source = \"pos\""));
        assert_eq!(e.field.as_deref(), Some("match.source"));
        assert_eq!(e.rule.as_deref(), Some("pos-offline"));

        let e = error_of(&GOOD.replace("({label.appliance})", "({apliance})"));
        assert_eq!(e.field.as_deref(), Some("message"));
        assert!(e.reason.contains("unknown placeholder {apliance}"), "{e}");

        let e = error_of(&GOOD.replace("per = \"store\"\n", ""));
        assert_eq!(e.field.as_deref(), Some("per"));

        let e = error_of(&GOOD.replace("timeout = \"2m\"", "timeout = \"0\""));
        assert_eq!(e.field.as_deref(), Some("timeout"));

        let e = error_of(&format!(
            "{GOOD}\n[[rules]]\nname = \"pos-offline\"\nkind = \"absence\"\n"
        ));
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.reason.contains("twice"));

        let e = error_of("[[rules]]\nkind = \"absence\"\n");
        assert_eq!(e.field.as_deref(), Some("rules[0].name"));

        let e = error_of("[rulez]\n");
        assert_eq!(e.field.as_deref(), Some("rulez"));

        let e = error_of("[[rules]\n");
        assert!(e.reason.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn the_example_file_loads_with_every_kind() {
        let set = RuleSet::parse(include_str!("../../../config/rules.example.toml"))
            .expect("config/rules.example.toml is valid");
        let d = set.for_tenant("anyone");
        let kinds: BTreeSet<&str> = d.by_name.values().map(|r| r.spec.kind_name()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "threshold",
                "absence",
                "rate_of_change",
                "stock",
                "sales_anomaly",
                "cold_chain"
            ])
        );
        let acme = set.for_tenant("acme");
        assert!(!acme.by_name.contains_key("sales-drop"));
        assert!(acme.by_name.contains_key("night-door-open"));
        let Spec::Threshold(h) = acme.by_name["freezer-warm"].spec else {
            panic!("threshold")
        };
        assert_eq!((h.fire, h.clear), (-18.0, -20.0));
    }

    #[test]
    fn patterns_glob() {
        assert!(Pattern::new("freezer-*").matches("freezer-2"));
        assert!(!Pattern::new("freezer-*").matches("fridge-1"));
        assert!(Pattern::new("*").matches("anything"));
        assert!(Pattern::new("*-1").matches("pos-1"));
        assert!(!Pattern::new("*-1").matches("pos-12"));
        assert!(Pattern::new("a*b*c").matches("a-x-b-y-c"));
        assert!(!Pattern::new("a*b*c").matches("a-x-c-y-b"));
        assert!(Pattern::new("store-001").matches("store-001"));
        assert!(!Pattern::new("store-001").matches("store-0011"));
        assert!(Pattern::new("*mid*").matches("amidb"));
    }

    #[test]
    fn recurring_windows_overlap() {
        let r = Recurring {
            every: 6 * span::HOUR,
            duration: 30 * span::MINUTE,
            offset: span::HOUR,
        };
        assert_eq!(r.overlap(0, span::HOUR), 0);
        assert_eq!(
            r.overlap(0, span::HOUR + 10 * span::MINUTE),
            10 * span::MINUTE
        );
        assert_eq!(
            r.overlap(span::HOUR, 7 * span::HOUR + span::MINUTE),
            31 * span::MINUTE
        );
        assert_eq!(
            r.overlap(
                -5 * span::HOUR - 10 * span::MINUTE,
                -5 * span::HOUR + 10 * span::MINUTE
            ),
            10 * span::MINUTE
        );
    }

    #[test]
    fn templates_render_known_placeholders() {
        let t = Template::parse("{entity} at {value} ({label.appliance})").expect("ok");
        let out = t.render(|k| match k {
            "entity" => Some("freezer-1".into()),
            "value" => Some("-9.5".into()),
            "label.appliance" => Some("freezer".into()),
            _ => None,
        });
        assert_eq!(out, "freezer-1 at -9.5 (freezer)");
        assert!(Template::parse("{nope}").is_err());
        assert!(Template::parse("{entity").is_err());
    }
}
