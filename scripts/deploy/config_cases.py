"""The configuration each rendered StorePulse container gets from the Helm chart, and
what the chart's values say it must contain: input of tests/deploy.rs, which loads
each with the service's own loader (`storepulse config show SERVICE`) and checks that
every key of the values reached the service.

Prints a JSON list of cases:
  {"case", "service", "container", "config_toml", "env": {name: value},
   "claims": [{"path": [section, key, ...], "value": v, "from": "values key"}],
   "expect_error": null | "text the loader's error must contain"}
"""

from __future__ import annotations

import json
import re
import sys

import yaml

import chart

# What a secretKeyRef resolves to in the test (no cluster, no Secrets).
SECRET_PLACEHOLDERS = {
    "STOREPULSE_POSTGRES__URL": "postgres://storepulse@postgres-from-secret:5432/storepulse",
    "KAFKA_SASL_USERNAME": "user-from-secret",
    "KAFKA_SASL_PASSWORD": "password-from-secret",
}
REDACTED = "<redacted>"
# Sections each service reads besides its own (see src/effective_config.rs).
SHARED = {
    "ingest": ["kafka", "postgres", "log"],
    "compactor": ["kafka", "postgres", "log"],
    "rules": ["kafka", "postgres", "log"],
    "forecaster": ["kafka", "postgres", "log"],
    "notifier": ["kafka", "postgres", "log"],
}


def leaves(value, path=()):
    """(path, value) of every scalar or list in a nested dict."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    else:
        yield path, value


def expand(value: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion of an env value from earlier variables."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(container: dict) -> dict:
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = expand(str(e["value"]), env)
        elif "valueFrom" in e:
            env[e["name"]] = SECRET_PLACEHOLDERS.get(e["name"], f"secret-{e['name']}")
    return env


def env_claims(env: dict, values_key: str):
    """A STOREPULSE_<SECTION>__<KEY> variable set in the values names a config key."""
    for name, value in env.items():
        if not name.startswith("STOREPULSE_") or name == "STOREPULSE_CONFIG":
            continue
        path = [p.lower() for p in name[len("STOREPULSE_"):].split("__")]
        yield {"path": path, "value": value, "from": f"{values_key}.{name}"}


def cases_for(case: str, values: dict, expect_error: str | None = None) -> list[dict]:
    merged = chart.merged_values(values)
    docs = chart.render(values)
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    out = []
    for d in docs:
        if d["kind"] not in ("Deployment", "Job"):
            continue
        spec = d["spec"]["template"]["spec"]
        cm_name = next(v["configMap"]["name"] for v in spec["volumes"] if v["name"] == "config")
        config_toml = configmaps[cm_name]["data"]["storepulse.toml"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            if d["kind"] == "Deployment":
                service = c["args"][1]
            else:
                service = "compactor"  # topics + migrate read kafka, postgres, log
            svc_values = merged["services"].get(service, {}) if d["kind"] == "Deployment" else {}
            env = container_env(c)
            claims = []
            for section, sec_values in (merged.get("config") or {}).items():
                if section not in SHARED[service] and section != service:
                    continue
                for path, v in leaves(sec_values):
                    claims.append({"path": [section, *path], "value": v, "from": f"config.{section}.{'.'.join(path)}"})
            if d["kind"] == "Deployment":
                for path, v in leaves(svc_values.get("config") or {}):
                    claims.append({"path": [service, *path], "value": v, "from": f"services.{service}.config.{'.'.join(path)}"})
                claims.append({"path": [service, svc_values["listenKey"]], "value": f"0.0.0.0:{svc_values['port']}", "from": f"services.{service}.port"})
                claims.extend(env_claims(svc_values.get("env") or {}, f"services.{service}.env"))
                if service == "rules":
                    claims.append({"path": ["rules", "rules_file"], "value": "/etc/storepulse/config/rules.toml", "from": "services.rules.rulesFile"})
                if service == "notifier":
                    claims.append({"path": ["notifier", "policy_file"], "value": "/etc/storepulse/config/policy.toml", "from": "services.notifier.policyFile"})
            claims.append({"path": ["postgres", "url"], "value": SECRET_PLACEHOLDERS["STOREPULSE_POSTGRES__URL"], "from": "postgres.existingSecret"})
            tls, sasl = merged["kafka"]["tls"], merged["kafka"]["sasl"]
            protocol = {(True, True): "SASL_SSL", (True, False): "SSL", (False, True): "SASL_PLAINTEXT"}.get((tls["enabled"], sasl["enabled"]))
            if protocol:
                claims.append({"path": ["kafka", "properties", "security.protocol"], "value": protocol, "from": "kafka.tls/kafka.sasl"})
            if sasl["enabled"]:
                claims.append({"path": ["kafka", "properties", "sasl.mechanism"], "value": sasl["mechanism"], "from": "kafka.sasl.mechanism"})
                claims.append({"path": ["kafka", "properties", "sasl.username"], "value": SECRET_PLACEHOLDERS["KAFKA_SASL_USERNAME"], "from": "kafka.sasl.usernameKey"})
                claims.append({"path": ["kafka", "properties", "sasl.password"], "value": REDACTED, "from": "kafka.sasl.passwordKey"})
            if tls["enabled"] and tls["existingSecret"]:
                claims.append({"path": ["kafka", "properties", "ssl.ca.location"], "value": f"/etc/storepulse/kafka-tls/{tls['caKey']}", "from": "kafka.tls.caKey"})
            if service not in SHARED or d["kind"] == "Job":
                claims = [c for c in claims if c["path"][0] in SHARED["compactor"]]
            else:
                claims = [c for c in claims if c["path"][0] in SHARED[service] + [service]]
            out.append({
                "case": case,
                "service": service,
                "container": f"{d['kind']}/{d['metadata']['name']}/{c['name']}",
                "config_toml": config_toml,
                "env": env,
                "claims": claims,
                "expect_error": expect_error,
            })
    return out


def compose_cases() -> list[dict]:
    """Every StorePulse container of docker-compose.yml: no config file, its
    environment; every STOREPULSE_* variable must reach the key it names."""
    compose = yaml.safe_load((chart.ROOT / "docker-compose.yml").read_text())
    out = []
    for name, svc in compose["services"].items():
        if svc.get("image") != "storepulse:dev":
            continue
        command = svc.get("command") or []
        service = command[1] if command[:1] == ["run"] else "compactor"  # topics, migrate, simulate: kafka/postgres/log
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        claims = [c for c in env_claims(env, f"docker-compose.yml {name}.environment")
                  if c["path"][0] in SHARED[service] + [service]]
        for c in claims:
            if c["path"] == ["postgres", "url"]:
                # `config show` redacts the password (src/effective_config.rs).
                c["value"] = re.sub(r"^([a-z]+://[^:/@]+:)[^@]*@", rf"\g<1>{REDACTED}@", c["value"])
        out.append({
            "case": "compose",
            "service": service,
            "container": f"compose/{name}",
            "config_toml": "",
            "env": env,
            "claims": claims,
            "expect_error": None,
        })
    return out


def file_cases() -> list[dict]:
    """The rule files and notification policies the chart (every values file) and
    docker-compose.yml give the services, with the environment their secrets are
    looked up in: {"origin", "kind": "rules"|"policy", "text", "env"}."""
    out = []
    for name in ("default", "dev", "prod"):
        docs = chart.render(chart.values_file(name))
        envs = {}
        for d in docs:
            if d["kind"] == "Deployment":
                c = d["spec"]["template"]["spec"]["containers"][0]
                envs[c["args"][1]] = container_env(c)
        for d in docs:
            if d["kind"] != "ConfigMap":
                continue
            for key, kind, service in (("rules.toml", "rules", "rules"), ("policy.toml", "policy", "notifier")):
                if key in d["data"]:
                    out.append({"origin": f"chart ({name} values) ConfigMap/{d['metadata']['name']}/{key}",
                                "kind": kind, "text": d["data"][key], "env": envs.get(service, {})})
    compose = yaml.safe_load((chart.ROOT / "docker-compose.yml").read_text())
    for svc, kind, var in (("rules", "rules", "STOREPULSE_RULES__RULES_FILE"), ("notifier", "policy", "STOREPULSE_NOTIFIER__POLICY_FILE")):
        service = compose["services"][svc]
        env = {k: str(v) for k, v in (service.get("environment") or {}).items()}
        target = env[var]
        source = next(v.split(":")[0] for v in service["volumes"] if v.split(":")[1] == target)
        out.append({"origin": f"docker-compose.yml {svc}: {source}", "kind": kind,
                    "text": (chart.ROOT / source).read_text(), "env": env})
    return out


def main() -> None:
    if sys.argv[1:] == ["files"]:
        json.dump(file_cases(), sys.stdout, indent=1)
        return
    cases = []
    for name in ("default", "dev", "prod"):
        cases += cases_for(name, chart.values_file(name))
    cases += compose_cases()
    # Must fail: a misspelt key in a service's section never reaches it.
    cases += [c for c in cases_for(
        "typo", {"services": {"compactor": {"config": {"batch_max_record": 5000}}}}, expect_error="batch_max_record",
    ) if c["service"] == "compactor" and c["container"].startswith("Deployment")]
    # Must fail: a value of the wrong type (one values.schema.json leaves to the loader).
    cases += [c for c in cases_for(
        "wrong-type", {"services": {"ingest": {"config": {"max_batch_events": "lots"}}}}, expect_error="max_batch_events",
    ) if c["service"] == "ingest"]
    json.dump(cases, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
