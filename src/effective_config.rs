//! The configuration a service would run with (`storepulse config show SERVICE`):
//! loaded by the service's own loader from the same sources its binary reads
//! (defaults, `--config`/`$STOREPULSE_CONFIG`, `STOREPULSE_<SECTION>__<KEY>`), so a
//! deployment's ConfigMap and environment can be checked before anything runs.
//!
//! The answer is every section the service reads, with every key (defaults filled
//! in), as JSON. Secrets never appear: the password of `postgres.url` and every
//! `kafka.properties` value whose key names a password, secret or private key are
//! replaced by [`REDACTED`].

use serde_json::{Value, json};
use storepulse_runtime::ConfigSource;

/// What replaces a secret in the output.
pub const REDACTED: &str = "<redacted>";

/// The services whose configuration can be shown, by config section name.
pub const SERVICES: &[&str] = &["ingest", "compactor", "rules", "forecaster", "notifier"];

/// The effective configuration of `service` (a name of [`SERVICES`]), secrets
/// redacted. Errors are the service's own start-up errors (unknown key, bad value).
pub fn effective(service: &str, src: &ConfigSource) -> anyhow::Result<Value> {
    let mut value = match service {
        "ingest" => {
            let c = storepulse_ingest::IngestConfig::from_source(src)?;
            json!({"kafka": c.kafka, "postgres": c.postgres, "log": c.log, "ingest": c.ingest})
        }
        "compactor" => {
            let c = storepulse_compactor::CompactorConfig::from_source(src)?;
            json!({"kafka": c.kafka, "postgres": c.postgres, "log": c.log, "compactor": c.compactor})
        }
        "rules" => {
            let c = storepulse_rules::config(src)?;
            json!({"kafka": c.kafka, "postgres": c.postgres, "log": c.log, "rules": c.rules})
        }
        "forecaster" => {
            let c = storepulse_forecaster::config(src)?;
            json!({"kafka": c.kafka, "postgres": c.postgres, "log": c.log, "forecaster": c.forecaster})
        }
        "notifier" => {
            let c = storepulse_notifier::config(src)?;
            json!({"kafka": c.kafka, "postgres": c.postgres, "log": c.log, "notifier": c.notifier})
        }
        other => anyhow::bail!("unknown service `{other}` (known: {})", SERVICES.join(", ")),
    };
    redact(&mut value);
    Ok(value)
}

/// Replaces the secrets in an effective configuration by [`REDACTED`].
fn redact(value: &mut Value) {
    if let Some(Value::String(url)) = value.pointer_mut("/postgres/url") {
        *url = redact_postgres_url(url);
    }
    if let Some(Value::Object(props)) = value.pointer_mut("/kafka/properties") {
        for (key, v) in props.iter_mut() {
            if is_secret_property(key) {
                *v = Value::String(REDACTED.into());
            }
        }
    }
}

/// librdkafka properties that hold secrets (`sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".pem") || k == "ssl.keystore.key"
}

/// `postgres://user:pw@host/db` → `postgres://user:<redacted>@host/db`; a
/// key=value string's `password=...` likewise.
pub fn redact_postgres_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let userinfo = &rest[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:{REDACTED}{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        if let Some(q) = rest.find('?') {
            let query: Vec<String> = rest[q + 1..]
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}={REDACTED}")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            return format!(
                "{}{}?{}",
                &url[..scheme_end + 3],
                &rest[..q],
                query.join("&")
            );
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_shows_its_sections_with_defaults() {
        let src = ConfigSource::from_toml(
            "[rules]\nrules_file = \"r.toml\"\n[kafka]\nbrokers = \"k:9092\"\n",
        )
        .expect("loads");
        for service in SERVICES {
            let v = effective(service, &src).expect(service);
            assert_eq!(v["kafka"]["brokers"], "k:9092", "{service}");
            assert!(v.get(*service).is_some(), "{service}: {v}");
        }
        let v = effective("compactor", &src).expect("compactor");
        assert_eq!(v["compactor"]["batch_max_records"], 2000);
        assert_eq!(v["kafka"]["topics"]["dead_letter_retention"], "30d");
    }

    #[test]
    fn bad_keys_are_the_services_own_errors() {
        let src = ConfigSource::from_toml("[ingest]\nlisten_on = \"x\"\n").expect("loads");
        let err = effective("ingest", &src).expect_err("unknown key");
        assert!(err.to_string().contains("listen_on"), "{err}");
        assert!(effective("billing", &src).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let src = ConfigSource::from_toml(
            "[postgres]\nurl = \"postgres://sp:hunter2@db:5432/sp\"\n\
             [kafka.properties]\n\"sasl.password\" = \"hunter2\"\n\"sasl.mechanism\" = \"PLAIN\"\n",
        )
        .expect("loads");
        let v = effective("ingest", &src).expect("ingest");
        let text = v.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(v["postgres"]["url"], "postgres://sp:<redacted>@db:5432/sp");
        assert_eq!(v["kafka"]["properties"]["sasl.mechanism"], "PLAIN");
        assert_eq!(
            redact_postgres_url("postgres://db/sp?user=a&password=b"),
            "postgres://db/sp?user=a&password=<redacted>"
        );
        assert_eq!(
            redact_postgres_url("host=db password=b user=a"),
            "host=db password=<redacted> user=a"
        );
        assert_eq!(
            redact_postgres_url("postgres://a@db/sp"),
            "postgres://a@db/sp"
        );
    }
}
