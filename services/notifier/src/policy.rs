//! The notification policy: a TOML file with a routing tree and receivers.
//!
//! Guarantees:
//! - a policy is only ever built whole and valid: every error names the route
//!   (`route.routes[1].routes[0]`), the receiver (`receivers[ops].channels[0]`) and the
//!   field at fault, and never contains a secret's value;
//! - routing is Alertmanager's: the root route matches every alert; children are tried
//!   in order; the first matching child takes the alert unless it says `continue = true`,
//!   in which case later siblings are tried too; a route none of whose children match
//!   takes the alert itself; children inherit unset `group_by` and timings;
//! - secrets come from an environment variable or a file, are read when the policy is
//!   loaded, and print as `***`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use storepulse_runtime::records::{AlertSeverity, AlertState, AlertTransition};

/// A policy problem, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification policy {path}: {reason}")]
pub struct PolicyError {
    /// Where: `route.routes[0].matchers[1]`, `receivers[ops].channels[0].url`, ...
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError {
        path: path.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------- file format

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    route: RouteFile,
    #[serde(default)]
    receivers: Vec<ReceiverFile>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitFile>,
    #[serde(default)]
    silences: Vec<SilenceFile>,
    #[serde(default)]
    time_zones: TimeZonesFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeZonesFile {
    default: Option<String>,
    #[serde(default)]
    tenants: BTreeMap<String, String>,
    /// Keyed `"<tenant>/<store>"`.
    #[serde(default)]
    stores: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuietHoursFile {
    start: String,
    end: String,
    #[serde(default = "default_breakthrough")]
    breakthrough: String,
}

/// Severity at or above which a notification breaks through quiet hours.
pub fn default_breakthrough() -> String {
    "critical".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    receiver: Option<String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "continue")]
    continue_: bool,
    group_by: Option<Vec<String>>,
    group_wait: Option<String>,
    group_interval: Option<String>,
    repeat_interval: Option<String>,
    /// Escalation ladder: unacknowledged after `after`, the alert goes to `receiver`.
    #[serde(default)]
    escalate: Vec<EscalationFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationFile {
    after: String,
    receiver: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InhibitFile {
    source_matchers: Vec<String>,
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceFile {
    matchers: Vec<String>,
    starts_at: String,
    ends_at: String,
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverFile {
    name: String,
    #[serde(default = "default_send_resolved")]
    send_resolved: bool,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff_initial")]
    backoff_initial: String,
    #[serde(default = "default_backoff_max")]
    backoff_max: String,
    #[serde(default)]
    channels: Vec<ChannelFile>,
    rate_limit: Option<RateLimitFile>,
    quiet_hours: Option<QuietHoursFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    messages: u32,
    per: String,
}

/// Resolved notifications are sent unless a receiver switches them off.
pub fn default_send_resolved() -> bool {
    true
}
/// Tries per channel before it counts as failed for good.
pub fn default_max_attempts() -> u32 {
    5
}
/// First retry delay; doubled per try, with jitter.
pub fn default_backoff_initial() -> String {
    "500ms".into()
}
/// Longest retry delay (a `Retry-After` is honoured up to this too).
pub fn default_backoff_max() -> String {
    "30s".into()
}
/// Group timings when the root route sets none (Alertmanager's defaults).
pub fn default_group_wait() -> Duration {
    Duration::from_secs(30)
}
pub fn default_group_interval() -> Duration {
    Duration::from_secs(300)
}
pub fn default_repeat_interval() -> Duration {
    Duration::from_secs(4 * 3600)
}
/// Per-request timeout of a channel.
pub fn default_channel_timeout() -> String {
    "10s".into()
}

/// Slack's Web API base (chat.postMessage is `<api_url>/chat.postMessage`).
pub fn default_slack_api_url() -> String {
    "https://slack.com/api".into()
}
/// WhatsApp Business Cloud API base (the Graph API host).
pub fn default_whatsapp_api_url() -> String {
    "https://graph.facebook.com".into()
}
/// Graph API version in WhatsApp request paths.
pub fn default_whatsapp_api_version() -> String {
    "v21.0".into()
}
/// Language of WhatsApp template messages.
pub fn default_template_language() -> String {
    "en_US".into()
}
/// SMTP submission port (STARTTLS).
pub fn default_smtp_port() -> u16 {
    587
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum ChannelFile {
    Webhook {
        url: String,
        secret_env: Option<String>,
        secret_file: Option<String>,
        #[serde(default = "default_channel_timeout")]
        timeout: String,
    },
    /// An incoming webhook (`url`, `url_env` or `url_file`: the URL is a secret) or
    /// chat.postMessage (`token_env`/`token_file` and `channel`).
    Slack {
        url: Option<String>,
        url_env: Option<String>,
        url_file: Option<String>,
        token_env: Option<String>,
        token_file: Option<String>,
        channel: Option<String>,
        #[serde(default = "default_slack_api_url")]
        api_url: String,
        #[serde(default = "default_channel_timeout")]
        timeout: String,
    },
    #[serde(rename = "whatsapp")]
    WhatsApp {
        #[serde(default = "default_whatsapp_api_url")]
        api_url: String,
        #[serde(default = "default_whatsapp_api_version")]
        api_version: String,
        phone_number_id: String,
        to: String,
        token_env: Option<String>,
        token_file: Option<String>,
        /// An approved template's name; without one, a text message (only delivered
        /// inside WhatsApp's 24-hour customer-service window).
        template: Option<String>,
        #[serde(default = "default_template_language")]
        language: String,
        #[serde(default = "default_channel_timeout")]
        timeout: String,
    },
    Email {
        smtp_host: String,
        #[serde(default = "default_smtp_port")]
        smtp_port: u16,
        #[serde(default)]
        starttls: StartTls,
        username: Option<String>,
        password_env: Option<String>,
        password_file: Option<String>,
        from: String,
        to: Vec<String>,
        #[serde(default = "default_channel_timeout")]
        timeout: String,
    },
}

/// Whether an email channel upgrades its SMTP connection with STARTTLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartTls {
    /// Refuse to send unless the server offers STARTTLS (the default).
    #[default]
    Required,
    /// Upgrade when the server offers it, else send in clear.
    Opportunistic,
    /// Never upgrade (a local relay).
    Off,
}

// ---------------------------------------------------------------- validated policy

/// A secret read from the environment or a file. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One way of reaching a receiver.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSpec {
    Webhook {
        url: String,
        secret: Option<Secret>,
        timeout: Duration,
    },
    Slack {
        target: SlackTarget,
        timeout: Duration,
    },
    WhatsApp {
        /// `<api_url>/<api_version>/<phone_number_id>/messages`.
        messages_url: String,
        /// Recipient phone number (digits, international format).
        to: String,
        token: Secret,
        /// Template name and language; `None`: a text message.
        template: Option<(String, String)>,
        timeout: Duration,
    },
    Email {
        host: String,
        port: u16,
        starttls: StartTls,
        /// User name and password for SMTP AUTH.
        credentials: Option<(String, Secret)>,
        from: lettre::message::Mailbox,
        to: Vec<lettre::message::Mailbox>,
        timeout: Duration,
    },
}

/// Where a Slack channel posts.
#[derive(Debug, Clone, PartialEq)]
pub enum SlackTarget {
    /// An incoming webhook; its URL is the secret.
    IncomingWebhook { url: Secret },
    /// `chat.postMessage` with a bot token.
    PostMessage {
        url: String,
        token: Secret,
        channel: String,
    },
}

impl ChannelSpec {
    /// The channel kind as recorded in outcomes.
    pub fn kind(&self) -> storepulse_runtime::records::Channel {
        use storepulse_runtime::records::Channel;
        match self {
            ChannelSpec::Webhook { .. } => Channel::Webhook,
            ChannelSpec::Slack { .. } => Channel::Slack,
            ChannelSpec::WhatsApp { .. } => Channel::WhatsApp,
            ChannelSpec::Email { .. } => Channel::Email,
        }
    }
}

/// Retry policy of one receiver's channels.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Who gets notified, and how: its channels in fallback order.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub send_resolved: bool,
    pub retry: RetryPolicy,
    pub channels: Vec<ChannelSpec>,
    /// At most this many messages per duration (bursts up to the count); more wait.
    pub rate_limit: Option<(u32, Duration)>,
    /// Local hours (in each alert's store's zone) when only severe alerts go out.
    pub quiet_hours: Option<QuietHours>,
}

/// Quiet hours: from `start` to `end` local time (over midnight when `end` is
/// earlier), notifications below `breakthrough` severity are held until the end.
#[derive(Debug, Clone, PartialEq)]
pub struct QuietHours {
    pub start: jiff::civil::Time,
    pub end: jiff::civil::Time,
    /// 0 info, 1 warning, 2 critical.
    pub breakthrough: u8,
}

/// Rank of a severity name (info 0, warning 1, critical 2; unknown 0).
pub fn severity_rank(name: &str) -> u8 {
    match name {
        "critical" => 2,
        "warning" => 1,
        _ => 0,
    }
}

impl QuietHours {
    /// If `now` falls in quiet hours in `zone`: when they end.
    pub fn quiet_until(
        &self,
        zone: &jiff::tz::TimeZone,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let local = jiff::Timestamp::from_microsecond(now.timestamp_micros())
            .ok()?
            .to_zoned(zone.clone());
        let t = local.time();
        let date = local.date();
        let end_date = if self.start < self.end {
            if !(self.start <= t && t < self.end) {
                return None;
            }
            date
        } else if t >= self.start {
            date.tomorrow().ok()?
        } else if t < self.end {
            date
        } else {
            return None;
        };
        let end = end_date.to_datetime(self.end).to_zoned(zone.clone()).ok()?;
        chrono::DateTime::from_timestamp_micros(end.timestamp().as_microsecond())
    }

    /// Whether an alert of `severity` (name) is held now in `zone`; until when.
    pub fn holds(
        &self,
        severity: &str,
        zone: &jiff::tz::TimeZone,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        if severity_rank(severity) >= self.breakthrough {
            return None;
        }
        self.quiet_until(zone, now)
    }
}

/// Stores' time zones for quiet hours: a store's own, else its tenant's, else the
/// default (UTC unless set).
#[derive(Debug, Clone)]
pub struct TimeZones {
    pub default: jiff::tz::TimeZone,
    pub tenants: HashMap<String, jiff::tz::TimeZone>,
    pub stores: HashMap<(String, String), jiff::tz::TimeZone>,
}

impl TimeZones {
    pub fn zone(&self, tenant: &str, store: &str) -> &jiff::tz::TimeZone {
        self.stores
            .get(&(tenant.to_string(), store.to_string()))
            .or_else(|| self.tenants.get(tenant))
            .unwrap_or(&self.default)
    }
}

fn time_zone_at(path: &str, name: &str) -> Result<jiff::tz::TimeZone, PolicyError> {
    jiff::tz::TimeZone::get(name)
        .map_err(|e| err(path, format!("{name:?} is not an IANA time zone: {e}")))
}

fn time_zones(file: &TimeZonesFile) -> Result<TimeZones, PolicyError> {
    let default = match &file.default {
        Some(n) => time_zone_at("time_zones.default", n)?,
        None => jiff::tz::TimeZone::UTC,
    };
    let mut tenants = HashMap::new();
    for (t, n) in &file.tenants {
        tenants.insert(
            t.clone(),
            time_zone_at(&format!("time_zones.tenants.{t}"), n)?,
        );
    }
    let mut stores = HashMap::new();
    for (key, n) in &file.stores {
        let path = format!("time_zones.stores.\"{key}\"");
        let Some((t, s)) = key.split_once('/') else {
            return Err(err(path, "keys are \"<tenant>/<store>\""));
        };
        stores.insert((t.to_string(), s.to_string()), time_zone_at(&path, n)?);
    }
    Ok(TimeZones {
        default,
        tenants,
        stores,
    })
}

fn quiet_hours(path: &str, file: &QuietHoursFile) -> Result<QuietHours, PolicyError> {
    let time = |field: &str, v: &str| {
        v.parse::<jiff::civil::Time>().map_err(|e| {
            err(
                format!("{path}.quiet_hours.{field}"),
                format!("{v:?} is not a time of day (HH:MM or HH:MM:SS): {e}"),
            )
        })
    };
    let start = time("start", &file.start)?;
    let end = time("end", &file.end)?;
    if start == end {
        return Err(err(
            format!("{path}.quiet_hours.end"),
            "must differ from start",
        ));
    }
    let b = file.breakthrough.to_ascii_lowercase();
    let breakthrough = match b.as_str() {
        "info" | "warning" | "critical" => severity_rank(&b),
        "none" => 3,
        _ => {
            return Err(err(
                format!("{path}.quiet_hours.breakthrough"),
                format!(
                    "{:?}: one of info, warning, critical, none",
                    file.breakthrough
                ),
            ));
        }
    };
    Ok(QuietHours {
        start,
        end,
        breakthrough,
    })
}

/// What a matcher compares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Tenant,
    Store,
    Severity,
    Rule,
    Subject,
    Label(String),
}

impl Field {
    fn parse(name: &str) -> Self {
        match name {
            "tenant" => Field::Tenant,
            "store" => Field::Store,
            "severity" => Field::Severity,
            "rule" => Field::Rule,
            "subject" => Field::Subject,
            other => Field::Label(other.strip_prefix("label.").unwrap_or(other).to_string()),
        }
    }

    /// The alert's value of this field (a missing label is the empty string, as in
    /// Alertmanager).
    pub fn value<'a>(&self, alert: &'a AlertTransition) -> &'a str {
        match self {
            Field::Tenant => &alert.envelope.tenant_id,
            Field::Store => &alert.envelope.store_id,
            Field::Severity => severity_name(alert.severity),
            Field::Rule => &alert.rule_id,
            Field::Subject => &alert.subject,
            Field::Label(l) => alert.labels.get(l).map_or("", String::as_str),
        }
    }

    /// This field's value in an alert as messages show it ([`crate::router::alert_view`]).
    pub fn view_value<'a>(&self, view: &'a serde_json::Value) -> &'a str {
        let v = match self {
            Field::Tenant => &view["tenant_id"],
            Field::Store => &view["store_id"],
            Field::Severity => &view["severity"],
            Field::Rule => &view["rule_id"],
            Field::Subject => &view["subject"],
            Field::Label(l) => &view["labels"][l],
        };
        v.as_str().unwrap_or("")
    }

    pub fn name(&self) -> String {
        match self {
            Field::Tenant => "tenant".into(),
            Field::Store => "store".into(),
            Field::Severity => "severity".into(),
            Field::Rule => "rule".into(),
            Field::Subject => "subject".into(),
            Field::Label(l) => l.clone(),
        }
    }
}

/// Severity as written in matchers and messages.
pub fn severity_name(s: AlertSeverity) -> &'static str {
    match s {
        AlertSeverity::Info => "info",
        AlertSeverity::Warning => "warning",
        AlertSeverity::Critical => "critical",
    }
}

/// State as written in messages.
pub fn state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

#[derive(Debug, Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

/// `field op "value"`: `=`, `!=`, `=~` and `!~` (regexes are anchored).
#[derive(Debug, Clone)]
pub struct Matcher {
    field: Field,
    op: Op,
}

impl Matcher {
    /// Parses `store =~ "^s-00[1-5]$"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let pos = t.find(['=', '!']).ok_or_else(|| {
            format!("{t:?}: expected `field op \"value\"` with op =, !=, =~ or !~")
        })?;
        let name = t[..pos].trim();
        let rest = &t[pos..];
        let (op, value) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
            .ok_or_else(|| format!("{t:?}: unknown operator (use =, !=, =~ or !~)"))?;
        if value.starts_with(['=', '~']) {
            return Err(format!(
                "{t:?}: unknown operator `{op}{}` (use =, !=, =~ or !~)",
                &value[..1]
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(format!("{t:?}: {name:?} is not a field name"));
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_string();
        let field = Field::parse(name);
        let value = if field == Field::Severity && (op == "=" || op == "!=") {
            let v = value.to_ascii_lowercase();
            if !["info", "warning", "critical"].contains(&v.as_str()) {
                return Err(format!("{t:?}: severity is one of info, warning, critical"));
            }
            v
        } else {
            value
        };
        let regex = |v: &str| {
            Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("{t:?}: bad regex: {e}"))
        };
        let op = match op {
            "=" => Op::Eq(value),
            "!=" => Op::Ne(value),
            "=~" => Op::Re(regex(&value)?),
            _ => Op::NotRe(regex(&value)?),
        };
        Ok(Self { field, op })
    }

    pub fn matches(&self, alert: &AlertTransition) -> bool {
        self.matches_value(self.field.value(alert))
    }

    /// Whether an alert as messages show it matches.
    pub fn matches_view(&self, view: &serde_json::Value) -> bool {
        self.matches_value(self.field.view_value(view))
    }

    fn matches_value(&self, v: &str) -> bool {
        match &self.op {
            Op::Eq(x) => v == x,
            Op::Ne(x) => v != x,
            Op::Re(r) => r.is_match(v),
            Op::NotRe(r) => !r.is_match(v),
        }
    }
}

/// How a route groups and paces its notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupTiming {
    pub group_by: Vec<Field>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
}

/// One step of an escalation ladder: an alert still firing and unacknowledged
/// `after` its first notification was delivered also goes to `receiver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationStep {
    pub after: Duration,
    pub receiver: String,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `route`, `route.routes[0]`, ...: names it in logs and errors.
    pub path: String,
    pub receiver: String,
    /// Escalation ladder, `after` increasing (not inherited by children).
    pub escalate: Vec<EscalationStep>,
    matchers: Vec<Matcher>,
    pub continue_: bool,
    pub timing: GroupTiming,
    routes: Vec<Route>,
}

impl Route {
    fn matches(&self, alert: &AlertTransition) -> bool {
        self.matchers.iter().all(|m| m.matches(alert))
    }

    /// Adds the routes that take `alert` to `out`; false if this route does not match.
    fn walk<'a>(&'a self, alert: &AlertTransition, out: &mut Vec<&'a Route>) -> bool {
        if !self.matches(alert) {
            return false;
        }
        let mut child_took = false;
        for child in &self.routes {
            if child.walk(alert, out) {
                child_took = true;
                if !child.continue_ {
                    break;
                }
            }
        }
        if !child_took {
            out.push(self);
        }
        true
    }

    fn count(&self) -> usize {
        1 + self.routes.iter().map(Route::count).sum::<usize>()
    }
}

/// Where one alert goes: a receiver and the route that chose it.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    pub receiver: &'a Receiver,
    pub route: &'a Route,
}

impl Destination<'_> {
    /// The group this alert joins at this receiver: route path + the group_by values.
    pub fn group_key(&self, alert: &AlertTransition) -> String {
        let mut key = self.route.path.clone();
        for f in &self.route.timing.group_by {
            key.push_str(&format!("|{}={}", f.name(), f.value(alert)));
        }
        key
    }
}

/// A whole, valid policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub root: Route,
    pub receivers: BTreeMap<String, Receiver>,
    pub inhibit_rules: Vec<InhibitRule>,
    /// Silences kept in the policy file (the CLI's are in Postgres).
    pub silences: Vec<FileSilence>,
    /// Stores' time zones (for quiet hours).
    pub time_zones: TimeZones,
}

/// While an alert matching `source` fires, alerts matching `target` with the same
/// values of the `equal` fields are held (not notified); an alert never inhibits
/// itself.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<Field>,
}

impl InhibitRule {
    /// Whether the firing alert `source` inhibits `target` (both as messages show them).
    pub fn inhibits(&self, source: &serde_json::Value, target: &serde_json::Value) -> bool {
        source["alert_id"] != target["alert_id"]
            && self.source.iter().all(|m| m.matches_view(source))
            && self.target.iter().all(|m| m.matches_view(target))
            && self
                .equal
                .iter()
                .all(|f| f.view_value(source) == f.view_value(target))
    }
}

/// A silence from the policy file.
#[derive(Debug, Clone)]
pub struct FileSilence {
    pub matchers: Vec<Matcher>,
    pub starts_at: chrono::DateTime<chrono::Utc>,
    pub ends_at: chrono::DateTime<chrono::Utc>,
    pub comment: String,
}

/// Parses a list of matchers, naming `path[i]` on error.
pub fn matchers_at(path: &str, texts: &[String]) -> Result<Vec<Matcher>, PolicyError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, m)| Matcher::parse(m).map_err(|e| err(format!("{path}[{i}]"), e)))
        .collect()
}

fn time_at(path: &str, text: &str) -> Result<chrono::DateTime<chrono::Utc>, PolicyError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| err(path, format!("{text:?} is not an RFC 3339 time: {e}")))
}

impl Policy {
    /// Reads and validates the policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(path.display().to_string(), format!("cannot read: {e}")))?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Validates policy text; `env` looks secrets up (tests pass their own).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let span = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "file".into());
            err(span, e.message().to_string())
        })?;
        let mut receivers = BTreeMap::new();
        for (i, r) in file.receivers.iter().enumerate() {
            let rec = receiver(i, r, env)?;
            if receivers.insert(rec.name.clone(), rec).is_some() {
                return Err(err(format!("receivers[{}].name", r.name), "defined twice"));
            }
        }
        let inherited = GroupTiming {
            group_by: Vec::new(),
            group_wait: default_group_wait(),
            group_interval: default_group_interval(),
            repeat_interval: default_repeat_interval(),
        };
        if !file.route.matchers.is_empty() {
            return Err(err(
                "route.matchers",
                "the root route takes every alert: it has no matchers",
            ));
        }
        if file.route.receiver.is_none() {
            return Err(err(
                "route.receiver",
                "the root (default) route needs a receiver",
            ));
        }
        let root = route("route", &file.route, None, &inherited, &receivers)?;
        let mut inhibit_rules = Vec::new();
        for (i, r) in file.inhibit_rules.iter().enumerate() {
            let path = format!("inhibit_rules[{i}]");
            if r.source_matchers.is_empty() || r.target_matchers.is_empty() {
                return Err(err(
                    path,
                    "source_matchers and target_matchers must not be empty",
                ));
            }
            inhibit_rules.push(InhibitRule {
                source: matchers_at(&format!("{path}.source_matchers"), &r.source_matchers)?,
                target: matchers_at(&format!("{path}.target_matchers"), &r.target_matchers)?,
                equal: r.equal.iter().map(|n| Field::parse(n)).collect(),
            });
        }
        let mut silences = Vec::new();
        for (i, s) in file.silences.iter().enumerate() {
            let path = format!("silences[{i}]");
            if s.matchers.is_empty() {
                return Err(err(format!("{path}.matchers"), "a silence needs a matcher"));
            }
            let starts_at = time_at(&format!("{path}.starts_at"), &s.starts_at)?;
            let ends_at = time_at(&format!("{path}.ends_at"), &s.ends_at)?;
            if ends_at <= starts_at {
                return Err(err(format!("{path}.ends_at"), "must be after starts_at"));
            }
            silences.push(FileSilence {
                matchers: matchers_at(&format!("{path}.matchers"), &s.matchers)?,
                starts_at,
                ends_at,
                comment: s.comment.clone(),
            });
        }
        Ok(Self {
            root,
            receivers,
            inhibit_rules,
            silences,
            time_zones: time_zones(&file.time_zones)?,
        })
    }

    /// Where `alert` goes: one destination per receiver (the first route naming a
    /// receiver decides its grouping).
    pub fn route<'a>(&'a self, alert: &AlertTransition) -> Vec<Destination<'a>> {
        let mut routes = Vec::new();
        self.root.walk(alert, &mut routes);
        let mut out: Vec<Destination<'a>> = Vec::with_capacity(routes.len());
        for r in routes {
            if out.iter().any(|d| d.receiver.name == r.receiver) {
                continue;
            }
            if let Some(receiver) = self.receivers.get(&r.receiver) {
                out.push(Destination { receiver, route: r });
            }
        }
        out
    }

    /// The `repeat_interval` of the route at `path` (the root's if it is gone).
    pub fn repeat_interval(&self, path: &str) -> Duration {
        self.route_at(path)
            .map_or(self.root.timing.repeat_interval, |r| {
                r.timing.repeat_interval
            })
    }

    /// The escalation ladder of the route at `path` (empty if it is gone).
    pub fn escalation(&self, path: &str) -> &[EscalationStep] {
        self.route_at(path).map_or(&[], |r| r.escalate.as_slice())
    }

    /// The shortest wait before a delivered alert may need a follow-up (a repeat
    /// or an escalation step) anywhere in the tree.
    pub fn min_follow_up(&self) -> Duration {
        fn min(r: &Route) -> Duration {
            let own = r.escalate.first().map_or(r.timing.repeat_interval, |s| {
                s.after.min(r.timing.repeat_interval)
            });
            r.routes.iter().map(min).fold(own, Duration::min)
        }
        min(&self.root)
    }

    /// The shortest `repeat_interval` in the tree.
    pub fn min_repeat_interval(&self) -> Duration {
        fn min(r: &Route) -> Duration {
            r.routes
                .iter()
                .map(min)
                .fold(r.timing.repeat_interval, Duration::min)
        }
        min(&self.root)
    }

    /// Routes in the tree.
    pub fn route_count(&self) -> usize {
        self.root.count()
    }

    /// The route at `path`, if the tree (still) has it.
    pub fn route_at(&self, path: &str) -> Option<&Route> {
        fn find<'a>(r: &'a Route, path: &str) -> Option<&'a Route> {
            if r.path == path {
                return Some(r);
            }
            r.routes.iter().find_map(|c| find(c, path))
        }
        find(&self.root, path)
    }
}

/// Parses `500ms`, `30s`, `5m`, `1h30m`, `1d` (zero allowed): the one duration syntax
/// of StorePulse ([`storepulse_runtime::span`]).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    storepulse_runtime::span::parse_duration(text)
}

fn duration_at(path: &str, field: &str, text: &str) -> Result<Duration, PolicyError> {
    parse_duration(text).map_err(|e| err(format!("{path}.{field}"), e))
}

fn route(
    path: &str,
    file: &RouteFile,
    parent_receiver: Option<&str>,
    inherited: &GroupTiming,
    receivers: &BTreeMap<String, Receiver>,
) -> Result<Route, PolicyError> {
    let receiver = file
        .receiver
        .as_deref()
        .or(parent_receiver)
        .unwrap_or_default()
        .to_string();
    if !receivers.contains_key(&receiver) {
        return Err(err(
            format!("{path}.receiver"),
            format!(
                "no receiver named {receiver:?} (known: {})",
                receivers.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let matchers = file
        .matchers
        .iter()
        .enumerate()
        .map(|(i, m)| Matcher::parse(m).map_err(|e| err(format!("{path}.matchers[{i}]"), e)))
        .collect::<Result<Vec<_>, _>>()?;
    let timing = GroupTiming {
        group_by: match &file.group_by {
            Some(g) => g.iter().map(|n| Field::parse(n)).collect(),
            None => inherited.group_by.clone(),
        },
        group_wait: match &file.group_wait {
            Some(t) => duration_at(path, "group_wait", t)?,
            None => inherited.group_wait,
        },
        group_interval: match &file.group_interval {
            Some(t) => duration_at(path, "group_interval", t)?,
            None => inherited.group_interval,
        },
        repeat_interval: match &file.repeat_interval {
            Some(t) => duration_at(path, "repeat_interval", t)?,
            None => inherited.repeat_interval,
        },
    };
    if timing.group_interval.is_zero() {
        return Err(err(format!("{path}.group_interval"), "must be > 0"));
    }
    if timing.repeat_interval.is_zero() {
        return Err(err(format!("{path}.repeat_interval"), "must be > 0"));
    }
    let mut escalate: Vec<EscalationStep> = Vec::new();
    for (i, step) in file.escalate.iter().enumerate() {
        let at = format!("{path}.escalate[{i}]");
        let after = duration_at(&at, "after", &step.after)?;
        if after.is_zero() || escalate.last().is_some_and(|p| p.after >= after) {
            return Err(err(
                format!("{at}.after"),
                "must be > 0 and later than the step before",
            ));
        }
        if !receivers.contains_key(&step.receiver) {
            return Err(err(
                format!("{at}.receiver"),
                format!("no receiver named {:?}", step.receiver),
            ));
        }
        escalate.push(EscalationStep {
            after,
            receiver: step.receiver.clone(),
        });
    }
    let routes = file
        .routes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            route(
                &format!("{path}.routes[{i}]"),
                c,
                Some(&receiver),
                &timing,
                receivers,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Route {
        path: path.to_string(),
        receiver,
        escalate,
        matchers,
        continue_: file.continue_,
        timing,
        routes,
    })
}

fn receiver(
    index: usize,
    file: &ReceiverFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Receiver, PolicyError> {
    if file.name.trim().is_empty() {
        return Err(err(format!("receivers[{index}].name"), "must not be empty"));
    }
    let path = format!("receivers[{}]", file.name);
    if file.channels.is_empty() {
        return Err(err(format!("{path}.channels"), "at least one channel"));
    }
    if file.max_attempts == 0 {
        return Err(err(format!("{path}.max_attempts"), "must be >= 1"));
    }
    let retry = RetryPolicy {
        max_attempts: file.max_attempts,
        backoff_initial: duration_at(&path, "backoff_initial", &file.backoff_initial)?,
        backoff_max: duration_at(&path, "backoff_max", &file.backoff_max)?,
    };
    let channels = file
        .channels
        .iter()
        .enumerate()
        .map(|(i, c)| channel(&format!("{path}.channels[{i}]"), c, env))
        .collect::<Result<Vec<_>, _>>()?;
    let rate_limit = match &file.rate_limit {
        None => None,
        Some(r) => {
            if r.messages == 0 {
                return Err(err(format!("{path}.rate_limit.messages"), "must be >= 1"));
            }
            let per = duration_at(&format!("{path}.rate_limit"), "per", &r.per)?;
            if per.is_zero() {
                return Err(err(format!("{path}.rate_limit.per"), "must be > 0"));
            }
            Some((r.messages, per))
        }
    };
    let quiet_hours = file
        .quiet_hours
        .as_ref()
        .map(|q| quiet_hours(&path, q))
        .transpose()?;
    Ok(Receiver {
        name: file.name.clone(),
        send_resolved: file.send_resolved,
        retry,
        channels,
        rate_limit,
        quiet_hours,
    })
}

fn secret(
    path: &str,
    from_env: &Option<String>,
    from_file: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, PolicyError> {
    named_secret(path, "secret", from_env, from_file, env)
}

/// A secret from `<name>_env` or `<name>_file` (at most one of them).
fn named_secret(
    path: &str,
    name: &str,
    from_env: &Option<String>,
    from_file: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, PolicyError> {
    match (from_env, from_file) {
        (Some(_), Some(_)) => Err(err(
            format!("{path}.{name}_env"),
            format!("give {name}_env or {name}_file, not both"),
        )),
        (Some(var), None) => match env(var) {
            Some(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(err(
                format!("{path}.{name}_env"),
                format!("environment variable {var} is not set or empty"),
            )),
        },
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(v) if !v.trim().is_empty() => {
                Ok(Some(Secret(v.trim_end_matches(['\n', '\r']).to_string())))
            }
            Ok(_) => Err(err(
                format!("{path}.{name}_file"),
                format!("{file} is empty"),
            )),
            Err(e) => Err(err(
                format!("{path}.{name}_file"),
                format!("cannot read {file}: {}", e.kind()),
            )),
        },
        (None, None) => Ok(None),
    }
}

/// A secret that must be given.
fn required_secret(
    path: &str,
    name: &str,
    from_env: &Option<String>,
    from_file: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, PolicyError> {
    named_secret(path, name, from_env, from_file, env)?.ok_or_else(|| {
        err(
            format!("{path}.{name}_env"),
            format!("give {name}_env or {name}_file"),
        )
    })
}

fn mailbox(path: &str, text: &str) -> Result<lettre::message::Mailbox, PolicyError> {
    text.parse()
        .map_err(|e| err(path, format!("{text:?} is not an email address: {e}")))
}

fn http_url(path: &str, url: &str) -> Result<String, PolicyError> {
    http_url_at(&format!("{path}.url"), url)
}

/// Checks an http(s) URL; the error never repeats the URL (it may be a secret).
fn http_url_at(at: &str, url: &str) -> Result<String, PolicyError> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(url.to_string()),
        Ok(u) => Err(err(
            at,
            format!("scheme {} is not http or https", u.scheme()),
        )),
        Err(e) => Err(err(at, format!("not a URL: {e}"))),
    }
}

fn channel(
    path: &str,
    file: &ChannelFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ChannelSpec, PolicyError> {
    match file {
        ChannelFile::Webhook {
            url,
            secret_env,
            secret_file,
            timeout,
        } => Ok(ChannelSpec::Webhook {
            url: http_url(path, url)?,
            secret: secret(path, secret_env, secret_file, env)?,
            timeout: duration_at(path, "timeout", timeout)?,
        }),
        ChannelFile::Slack {
            url,
            url_env,
            url_file,
            token_env,
            token_file,
            channel,
            api_url,
            timeout,
        } => {
            let timeout = duration_at(path, "timeout", timeout)?;
            let hook = match (url, named_secret(path, "url", url_env, url_file, env)?) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        format!("{path}.url"),
                        "give one of url, url_env, url_file",
                    ));
                }
                (Some(u), None) => Some(Secret(u.clone())),
                (None, s) => s,
            };
            let token = named_secret(path, "token", token_env, token_file, env)?;
            let target = match (hook, token) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        path,
                        "an incoming webhook (url) or chat.postMessage (token), not both",
                    ));
                }
                (None, None) => {
                    return Err(err(
                        path,
                        "give an incoming webhook (url, url_env or url_file) or a token (token_env or token_file) and a channel",
                    ));
                }
                (Some(url), None) => {
                    if channel.is_some() {
                        return Err(err(
                            format!("{path}.channel"),
                            "an incoming webhook posts to its own channel; channel goes with a token",
                        ));
                    }
                    http_url_at(&format!("{path}.url"), url.expose())?;
                    SlackTarget::IncomingWebhook { url }
                }
                (None, Some(token)) => {
                    let channel = match channel {
                        Some(c) if !c.trim().is_empty() => c.clone(),
                        _ => {
                            return Err(err(
                                format!("{path}.channel"),
                                "chat.postMessage needs a channel (name or id)",
                            ));
                        }
                    };
                    let base = http_url_at(&format!("{path}.api_url"), api_url)?;
                    SlackTarget::PostMessage {
                        url: format!("{}/chat.postMessage", base.trim_end_matches('/')),
                        token,
                        channel,
                    }
                }
            };
            Ok(ChannelSpec::Slack { target, timeout })
        }
        ChannelFile::WhatsApp {
            api_url,
            api_version,
            phone_number_id,
            to,
            token_env,
            token_file,
            template,
            language,
            timeout,
        } => {
            let base = http_url_at(&format!("{path}.api_url"), api_url)?;
            let segment = |field: &str, v: &str| {
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
                {
                    Err(err(
                        format!("{path}.{field}"),
                        format!("{v:?} must be letters, digits, '.' or '_'"),
                    ))
                } else {
                    Ok(())
                }
            };
            segment("api_version", api_version)?;
            segment("phone_number_id", phone_number_id)?;
            let digits = to.strip_prefix('+').unwrap_or(to);
            if digits.len() < 6 || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(err(
                    format!("{path}.to"),
                    format!(
                        "{to:?} is not a phone number in international format (digits, e.g. +4915112345678)"
                    ),
                ));
            }
            let template = match template {
                Some(t) if t.trim().is_empty() => {
                    return Err(err(format!("{path}.template"), "must not be empty"));
                }
                Some(t) => Some((t.clone(), language.clone())),
                None => None,
            };
            Ok(ChannelSpec::WhatsApp {
                messages_url: format!(
                    "{}/{api_version}/{phone_number_id}/messages",
                    base.trim_end_matches('/')
                ),
                to: digits.to_string(),
                token: required_secret(path, "token", token_env, token_file, env)?,
                template,
                timeout: duration_at(path, "timeout", timeout)?,
            })
        }
        ChannelFile::Email {
            smtp_host,
            smtp_port,
            starttls,
            username,
            password_env,
            password_file,
            from,
            to,
            timeout,
        } => {
            if smtp_host.trim().is_empty() {
                return Err(err(format!("{path}.smtp_host"), "must not be empty"));
            }
            if to.is_empty() {
                return Err(err(format!("{path}.to"), "at least one address"));
            }
            let password = named_secret(path, "password", password_env, password_file, env)?;
            let credentials = match (username, password) {
                (Some(u), Some(p)) => Some((u.clone(), p)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(err(
                        format!("{path}.password_env"),
                        "username given without password_env or password_file",
                    ));
                }
                (None, Some(_)) => {
                    return Err(err(
                        format!("{path}.username"),
                        "a password needs a username",
                    ));
                }
            };
            Ok(ChannelSpec::Email {
                host: smtp_host.clone(),
                port: *smtp_port,
                starttls: *starttls,
                credentials,
                from: mailbox(&format!("{path}.from"), from)?,
                to: to
                    .iter()
                    .enumerate()
                    .map(|(i, a)| mailbox(&format!("{path}.to[{i}]"), a))
                    .collect::<Result<_, _>>()?,
                timeout: duration_at(path, "timeout", timeout)?,
            })
        }
    }
}

/// Labels of a group as shown in messages: the group_by fields and their values.
pub fn group_labels(timing: &GroupTiming, alert: &AlertTransition) -> HashMap<String, String> {
    timing
        .group_by
        .iter()
        .map(|f| (f.name(), f.value(alert).to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubled_operators_are_refused_not_read_as_values() {
        for text in [
            "store == s-1",
            "store !== s-1",
            "store =~~ x",
            "store = =s-1",
        ] {
            let err = Matcher::parse(text).expect_err(text);
            assert!(err.contains("operator"), "{text}: {err}");
        }
        let ok = Matcher::parse("store = \"s-1\"").expect("plain =");
        assert!(matches!(ok.op, Op::Eq(ref v) if v == "s-1"));
    }

    fn alert(store: &str, severity: AlertSeverity, labels: &[(&str, &str)]) -> AlertTransition {
        serde_json::from_value(serde_json::json!({
            "envelope": {"event_id": "e", "tenant_id": "acme", "store_id": store,
                         "occurred_at": 0, "received_at": 0, "source": "t"},
            "alert_id": "a", "rule_id": "freezer-warm", "state": "Firing",
            "severity": severity, "subject": "freezer-1", "summary": "warm",
            "value": null, "started_at": 0,
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>(),
        }))
        .expect("alert")
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const POLICY: &str = r#"
        [route]
        receiver = "ops"
        group_by = ["store"]
        group_wait = "10s"

        [[route.routes]]
        receiver = "managers"
        matchers = ['severity = "critical"', 'store =~ "s-00[1-5]"']
        continue = true
        group_wait = "0s"

        [[route.routes]]
        receiver = "cold-chain"
        matchers = ['appliance = "freezer"']

        [[route.routes]]
        receiver = "never"
        matchers = ['tenant = "acme"']

        [[receivers]]
        name = "ops"
        [[receivers.channels]]
        type = "webhook"
        url = "http://127.0.0.1:1/ops"

        [[receivers]]
        name = "managers"
        [[receivers.channels]]
        type = "webhook"
        url = "http://127.0.0.1:1/managers"

        [[receivers]]
        name = "cold-chain"
        [[receivers.channels]]
        type = "webhook"
        url = "http://127.0.0.1:1/cold"

        [[receivers]]
        name = "never"
        [[receivers.channels]]
        type = "webhook"
        url = "http://127.0.0.1:1/never"
    "#;

    fn names(p: &Policy, a: &AlertTransition) -> Vec<String> {
        p.route(a).iter().map(|d| d.receiver.name.clone()).collect()
    }

    #[test]
    fn routing_follows_order_continue_and_default() {
        let p = Policy::parse(POLICY, &no_env).expect("valid");
        // critical in s-003 with a freezer: managers (continue), then cold-chain (stops).
        let a = alert(
            "s-003",
            AlertSeverity::Critical,
            &[("appliance", "freezer")],
        );
        assert_eq!(names(&p, &a), ["managers", "cold-chain"]);
        // warning, no freezer: the tenant route takes it.
        let b = alert("s-003", AlertSeverity::Warning, &[]);
        assert_eq!(names(&p, &b), ["never"]);
        // critical outside the store range, fridge: only the tenant route.
        let c = alert("s-009", AlertSeverity::Critical, &[("appliance", "fridge")]);
        assert_eq!(names(&p, &c), ["never"]);
        // another tenant, nothing matches: the default route.
        let mut d = alert("s-009", AlertSeverity::Info, &[]);
        d.envelope.tenant_id = "other".into();
        assert_eq!(names(&p, &d), ["ops"]);
        assert_eq!(p.route_count(), 4);
    }

    #[test]
    fn children_inherit_timings_and_group_keys_name_the_route() {
        let p = Policy::parse(POLICY, &no_env).expect("valid");
        let a = alert(
            "s-003",
            AlertSeverity::Critical,
            &[("appliance", "freezer")],
        );
        let d = p.route(&a);
        assert_eq!(d[0].route.timing.group_wait, Duration::ZERO);
        assert_eq!(d[1].route.timing.group_wait, Duration::from_secs(10));
        assert_eq!(d[1].route.timing.group_by, vec![Field::Store]);
        assert_eq!(d[0].group_key(&a), "route.routes[0]|store=s-003");
    }

    fn error_of(text: &str) -> PolicyError {
        Policy::parse(text, &no_env).expect_err("invalid")
    }

    #[test]
    fn errors_name_route_receiver_and_field() {
        let bad_matcher = POLICY.replace("'appliance = \"freezer\"'", "'appliance ~ \"x\"'");
        assert_eq!(error_of(&bad_matcher).path, "route.routes[1].matchers[0]");
        let bad_regex = POLICY.replace("s-00[1-5]", "s-00[1-5");
        let e = error_of(&bad_regex);
        assert_eq!(e.path, "route.routes[0].matchers[1]");
        assert!(e.reason.contains("bad regex"), "{e}");
        let unknown = POLICY.replace("receiver = \"cold-chain\"", "receiver = \"cold\"");
        let e = error_of(&unknown);
        assert_eq!(e.path, "route.routes[1].receiver");
        assert!(e.reason.contains("\"cold\""), "{e}");
        let bad_url = POLICY.replace("http://127.0.0.1:1/cold", "ftp://x/");
        assert_eq!(
            error_of(&bad_url).path,
            "receivers[cold-chain].channels[0].url"
        );
        let bad_wait = POLICY.replace("group_wait = \"10s\"", "group_wait = \"10 parsecs\"");
        assert_eq!(error_of(&bad_wait).path, "route.group_wait");
        let bad_sev = POLICY.replace("severity = \"critical\"", "severity = \"urgent\"");
        assert_eq!(error_of(&bad_sev).path, "route.routes[0].matchers[0]");
        let unknown_key = POLICY.replace("continue = true", "contine = true");
        let e = error_of(&unknown_key);
        assert!(e.reason.contains("contine"), "{e}");
        assert!(e.path.starts_with("line "), "{e}");
    }

    #[test]
    fn secrets_come_from_env_and_never_print() {
        let text = POLICY.replace(
            "url = \"http://127.0.0.1:1/ops\"",
            "url = \"http://127.0.0.1:1/ops\"\nsecret_env = \"OPS_SECRET\"",
        );
        let e = error_of(&text);
        assert_eq!(e.path, "receivers[ops].channels[0].secret_env");
        assert!(e.reason.contains("OPS_SECRET"));
        let env = |n: &str| (n == "OPS_SECRET").then(|| "hunter2".to_string());
        let p = Policy::parse(&text, &env).expect("valid");
        let printed = format!("{p:?}");
        assert!(!printed.contains("hunter2"), "secret printed: {printed}");
        match &p.receivers["ops"].channels[0] {
            ChannelSpec::Webhook { secret, .. } => {
                assert_eq!(secret.as_ref().map(Secret::expose), Some("hunter2"));
            }
            other => panic!("not a webhook: {other:?}"),
        }
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The documented example policy loads (with its secrets supplied).
    #[test]
    fn the_example_policy_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("managers");
        std::fs::write(&secret, "s").expect("secret");
        let slack_token = dir.path().join("slack");
        std::fs::write(&slack_token, "xoxb-1").expect("secret");
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/notifier.example.toml"
        ))
        .expect("example")
        .replace(
            "/run/secrets/managers-webhook",
            &secret.display().to_string(),
        )
        .replace(
            "/run/secrets/slack-bot-token",
            &slack_token.display().to_string(),
        );
        let env = |n: &str| match n {
            "NOTIFY_OPS_WEBHOOK_SECRET" | "NOTIFY_WHATSAPP_TOKEN" | "NOTIFY_SMTP_PASSWORD" => {
                Some("x".to_string())
            }
            "NOTIFY_SLACK_COLD_CHAIN_URL" => {
                Some("https://hooks.slack.com/services/T0/B0/x".to_string())
            }
            _ => None,
        };
        let p = Policy::parse(&text, &env).expect("example policy is valid");
        assert_eq!(p.route_count(), 3);
        let kinds = |r: &str| {
            p.receivers[r]
                .channels
                .iter()
                .map(ChannelSpec::kind)
                .collect::<Vec<_>>()
        };
        use storepulse_runtime::records::Channel;
        assert_eq!(
            kinds("store-managers"),
            [Channel::WhatsApp, Channel::Email, Channel::Webhook]
        );
        assert_eq!(kinds("cold-chain"), [Channel::Slack, Channel::Slack]);
        assert_eq!(p.inhibit_rules.len(), 1);
        assert_eq!(p.silences.len(), 1);
    }

    #[test]
    fn slack_whatsapp_and_email_channels_are_validated() {
        let base =
            "[route]\nreceiver = \"r\"\n[[receivers]]\nname = \"r\"\n[[receivers.channels]]\n";
        let parse = |channel: &str| {
            Policy::parse(&format!("{base}{channel}"), &|n| {
                (n == "TOKEN").then(|| "sekrit-token".to_string())
            })
        };
        let e = parse("type = \"slack\"\n").expect_err("no target");
        assert_eq!(e.path, "receivers[r].channels[0]");
        let e = parse("type = \"slack\"\ntoken_env = \"TOKEN\"\n").expect_err("no channel");
        assert_eq!(e.path, "receivers[r].channels[0].channel");
        let e =
            parse("type = \"slack\"\nurl = \"ftp://hooks/secret-path\"\n").expect_err("bad url");
        assert_eq!(e.path, "receivers[r].channels[0].url");
        assert!(!e.to_string().contains("secret-path"), "{e}");
        let p = parse("type = \"slack\"\ntoken_env = \"TOKEN\"\nchannel = \"#ops\"\napi_url = \"http://127.0.0.1:1/api/\"\n")
            .expect("post message");
        match &p.receivers["r"].channels[0] {
            ChannelSpec::Slack {
                target: SlackTarget::PostMessage { url, channel, .. },
                ..
            } => {
                assert_eq!(url, "http://127.0.0.1:1/api/chat.postMessage");
                assert_eq!(channel, "#ops");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{p:?}").contains("sekrit-token"));
        let wa = "type = \"whatsapp\"\nphone_number_id = \"123\"\ntoken_env = \"TOKEN\"\n";
        let e = parse(&format!("{wa}to = \"call me\"\n")).expect_err("bad number");
        assert_eq!(e.path, "receivers[r].channels[0].to");
        let e = parse("type = \"whatsapp\"\nphone_number_id = \"123\"\nto = \"+4915112345678\"\n")
            .expect_err("no token");
        assert_eq!(e.path, "receivers[r].channels[0].token_env");
        let p = parse(&format!(
            "{wa}to = \"+4915112345678\"\napi_url = \"http://127.0.0.1:1\"\n"
        ))
        .expect("whatsapp");
        match &p.receivers["r"].channels[0] {
            ChannelSpec::WhatsApp {
                messages_url,
                to,
                template,
                ..
            } => {
                assert_eq!(messages_url, "http://127.0.0.1:1/v21.0/123/messages");
                assert_eq!(to, "4915112345678");
                assert_eq!(template, &None);
            }
            other => panic!("{other:?}"),
        }
        let mail = "type = \"email\"\nsmtp_host = \"127.0.0.1\"\nfrom = \"a@example.com\"\n";
        let e = parse(&format!(
            "{mail}to = [\"ok@example.com\", \"not an address\"]\n"
        ))
        .expect_err("bad address");
        assert_eq!(e.path, "receivers[r].channels[0].to[1]");
        let e = parse(&format!(
            "{mail}to = [\"ok@example.com\"]\nusername = \"u\"\n"
        ))
        .expect_err("no password");
        assert_eq!(e.path, "receivers[r].channels[0].password_env");
        let e = parse(&format!(
            "{mail}to = [\"ok@example.com\"]\nstarttls = \"maybe\"\n"
        ))
        .expect_err("bad starttls");
        assert!(e.reason.contains("maybe"), "{e}");
        let p = parse(&format!(
            "{mail}to = [\"ok@example.com\"]\nusername = \"u\"\npassword_env = \"TOKEN\"\n"
        ))
        .expect("email");
        match &p.receivers["r"].channels[0] {
            ChannelSpec::Email {
                port,
                starttls,
                credentials,
                ..
            } => {
                assert_eq!(*port, 587);
                assert_eq!(*starttls, StartTls::Required);
                assert_eq!(
                    credentials.as_ref().map(|c| c.1.expose()),
                    Some("sekrit-token")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{p:?}").contains("sekrit-token"));
    }

    #[test]
    fn quiet_hours_hold_below_breakthrough_in_the_store_zone() {
        let base = "[route]\nreceiver = \"r\"\n[time_zones]\ndefault = \"Europe/Berlin\"\nstores = { \"acme/s-ny\" = \"America/New_York\" }\n[[receivers]]\nname = \"r\"\nquiet_hours = { start = \"22:00\", end = \"07:00\" }\n[[receivers.channels]]\ntype = \"webhook\"\nurl = \"http://x/\"\n";
        let p = Policy::parse(base, &|_| None).expect("valid");
        let q = p.receivers["r"].quiet_hours.clone().expect("quiet hours");
        let utc = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&chrono::Utc)
        };
        let berlin = p.time_zones.zone("acme", "s-1");
        let ny = p.time_zones.zone("acme", "s-ny");
        // 22:30 in Berlin (winter, UTC+1): quiet until 07:00 Berlin = 06:00 UTC.
        let night = utc("2026-11-23T21:30:00Z");
        assert_eq!(
            q.holds("warning", berlin, night),
            Some(utc("2026-11-24T06:00:00Z"))
        );
        assert_eq!(q.holds("critical", berlin, night), None, "breaks through");
        // The same instant is 16:30 in New York: not quiet there.
        assert_eq!(q.holds("warning", ny, night), None);
        // 05:00 Berlin: quiet until 07:00 the same day.
        assert_eq!(
            q.holds("info", berlin, utc("2026-11-24T04:00:00Z")),
            Some(utc("2026-11-24T06:00:00Z"))
        );
        assert_eq!(q.holds("info", berlin, utc("2026-11-24T06:00:00Z")), None);
        let e = Policy::parse(&base.replace("Europe/Berlin", "Mars/Olympus"), &|_| None)
            .expect_err("bad zone");
        assert_eq!(e.path, "time_zones.default");
        let e = Policy::parse(&base.replace("07:00", "7 am"), &|_| None).expect_err("bad time");
        assert_eq!(e.path, "receivers[r].quiet_hours.end");
        let e = Policy::parse(
            &base.replace(
                "end = \"07:00\"",
                "end = \"07:00\", breakthrough = \"urgent\"",
            ),
            &|_| None,
        )
        .expect_err("bad severity");
        assert_eq!(e.path, "receivers[r].quiet_hours.breakthrough");
    }

    #[test]
    fn escalation_ladders_are_validated() {
        let policy = |ladder: &str| {
            format!(
                "[route]\nreceiver = \"store\"\nrepeat_interval = \"1h\"\nescalate = [{ladder}]\n\
                 [[receivers]]\nname = \"store\"\n[[receivers.channels]]\ntype = \"webhook\"\nurl = \"http://x/\"\n\
                 [[receivers]]\nname = \"area\"\n[[receivers.channels]]\ntype = \"webhook\"\nurl = \"http://x/\"\n"
            )
        };
        let p = Policy::parse(
            &policy(
                r#"{ after = "15m", receiver = "area" }, { after = "1h", receiver = "store" }"#,
            ),
            &|_| None,
        )
        .expect("valid");
        assert_eq!(p.escalation("route").len(), 2);
        assert_eq!(p.escalation("route")[0].receiver, "area");
        assert_eq!(p.min_follow_up(), Duration::from_secs(900));
        let e = Policy::parse(
            &policy(
                r#"{ after = "1h", receiver = "area" }, { after = "15m", receiver = "store" }"#,
            ),
            &|_| None,
        )
        .expect_err("not increasing");
        assert_eq!(e.path, "route.escalate[1].after");
        let e = Policy::parse(&policy(r#"{ after = "1h", receiver = "nobody" }"#), &|_| {
            None
        })
        .expect_err("unknown receiver");
        assert_eq!(e.path, "route.escalate[0].receiver");
    }

    #[test]
    fn inhibit_rules_and_silences_are_validated() {
        let base = "[route]\nreceiver = \"r\"\n[[receivers]]\nname = \"r\"\n[[receivers.channels]]\ntype = \"webhook\"\nurl = \"http://x/\"\n";
        let e = Policy::parse(
            &format!("{base}[[inhibit_rules]]\nsource_matchers = ['rule = \"a\"']\ntarget_matchers = ['rule ~ \"b\"']\n"),
            &|_| None,
        )
        .expect_err("bad target");
        assert_eq!(e.path, "inhibit_rules[0].target_matchers[0]");
        let e = Policy::parse(
            &format!("{base}[[silences]]\nmatchers = ['store = \"s\"']\nstarts_at = \"2026-01-02T00:00:00Z\"\nends_at = \"2026-01-01T00:00:00Z\"\n"),
            &|_| None,
        )
        .expect_err("empty range");
        assert_eq!(e.path, "silences[0].ends_at");
    }
}
