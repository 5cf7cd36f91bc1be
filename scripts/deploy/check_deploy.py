"""Static checks of everything that deploys StorePulse (no Docker engine, no cluster):

  chart      the Helm chart lints (strict) and renders for the default, dev and prod
             values; values.schema.json refuses a wrong value
  manifests  the rendered manifests and k8s/ validate against the Kubernetes 1.31 API
             schemas (kubernetes-validate --strict); the custom resources
             (ServiceMonitor, PrometheusRule, ScaledObject, TriggerAuthentication)
             against the subset of their CRDs' schemas in crd_schemas.py; a
             deliberately wrong manifest fails; k8s/ is what the chart generates
  compose    docker-compose.yml is valid (docker-compose config), pins every image,
             builds from an existing Dockerfile, mounts only existing files
  image      the Docker build context (after .dockerignore) holds everything cargo
             reads, and the Dockerfile's features exist
  metrics    every metric named in the dashboards and alerting rules is registered
             by some service (names taken from the code, not a list)
  dashboards the dashboards are Grafana JSON whose panels use the provisioned
             data sources; the alerting rules are well formed

The config-key check (every Helm value reaches the service config it names) is the
Rust test tests/deploy.rs. Run: scripts/check-deploy.sh (called by scripts/test.sh).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

import chart
import crd_schemas
import generate_k8s

ROOT = chart.ROOT
KUBE_VERSION = "1.31.0"
VALUES = ("default", "dev", "prod")
CUSTOM_KINDS = set(crd_schemas.SCHEMAS)

failures: list[str] = []


def fail(what: str) -> None:
    failures.append(what)
    print(f"FAIL {what}")


def ok(what: str) -> None:
    print(f"ok   {what}")


# ---------------------------------------------------------------- manifests
def kubernetes_validate(paths: list[Path]) -> tuple[bool, str]:
    """kubernetes-validate --strict on files of core kinds; (passed, output)."""
    exe = shutil.which("kubernetes-validate")
    if exe is None:
        return False, "kubernetes-validate not found (scripts/install-deps.sh installs it)"
    proc = subprocess.run(
        [exe, "-k", KUBE_VERSION, "--strict", "--quiet", *map(str, paths)],
        capture_output=True,
        text=True,
    )
    out = (proc.stdout + proc.stderr).strip()
    # A kind without a schema is only a warning to it: never let one through here.
    if "Couldn't find schema" in out:
        return False, out
    return proc.returncode == 0, out


def validate_docs(label: str, docs: list[dict]) -> None:
    with tempfile.TemporaryDirectory(prefix="storepulse-manifests-") as tmp:
        paths = []
        for i, doc in enumerate(docs):
            kind = doc.get("kind")
            if kind in CUSTOM_KINDS:
                errors = crd_schemas.validate(doc)
                if errors:
                    fail(f"{label}: {kind}/{doc['metadata'].get('name')}: {'; '.join(errors)}")
                continue
            path = Path(tmp) / f"{i:03d}-{kind}.yaml"
            path.write_text(yaml.safe_dump(doc))
            paths.append(path)
        passed, out = kubernetes_validate(paths)
        if passed:
            ok(f"{label}: {len(docs)} manifests valid for Kubernetes {KUBE_VERSION}")
        else:
            fail(f"{label}: kubernetes-validate:\n{out}")


def check_security(label: str, docs: list[dict]) -> None:
    """Every StorePulse container: non-root, no privilege escalation, read-only root
    fs, all capabilities dropped, requests and limits, probes (Deployments)."""
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if not spec.get("securityContext", {}).get("runAsNonRoot"):
            fail(f"{label}: {name}: pod securityContext.runAsNonRoot is not true")
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            wanted = {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
            }
            for key, value in wanted.items():
                if sc.get(key) != value:
                    fail(f"{label}: {name}/{c['name']}: securityContext.{key} is not {value}")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                fail(f"{label}: {name}/{c['name']}: capabilities do not drop ALL")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                fail(f"{label}: {name}/{c['name']}: resources need requests and limits")
            if doc["kind"] == "Deployment":
                if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz":
                    fail(f"{label}: {name}: liveness probe is not /healthz")
                if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
                    fail(f"{label}: {name}: readiness probe is not /readyz")


def check_chart() -> None:
    for name in VALUES:
        values = chart.values_file(name)
        report = chart.lint(values)
        errors = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [
            {"error": e} for e in report.get("errors", [])
        ]
        if errors:
            fail(f"helm lint ({name} values): {errors}")
        else:
            ok(f"helm lint --strict ({name} values)")
        try:
            docs = chart.render(values)
        except Exception as e:  # noqa: BLE001 - the render error is the finding
            fail(f"helm render ({name} values): {e}")
            continue
        kinds = sorted({d["kind"] for d in docs})
        ok(f"helm render ({name} values): {len(docs)} manifests ({', '.join(kinds)})")
        validate_docs(f"chart ({name} values)", docs)
        check_security(f"chart ({name} values)", docs)
    # The prod values exercise every optional part.
    prod_kinds = {d["kind"] for d in chart.render(chart.values_file("prod"))}
    for kind in ("ServiceMonitor", "PrometheusRule", "ScaledObject", "TriggerAuthentication", "PodDisruptionBudget", "NetworkPolicy", "Job"):
        if kind not in prod_kinds:
            fail(f"chart (prod values) renders no {kind}")


def check_wrong_values_fail() -> None:
    """The checks can fail: a wrong value is refused by the chart's schema, and a
    manifest of the wrong type by the Kubernetes schemas."""
    try:
        chart.render({"services": {"ingest": {"replicas": "two"}}})
        fail("the chart accepted services.ingest.replicas = \"two\" (values.schema.json)")
    except Exception as e:  # noqa: BLE001
        if "replicas" in str(e):
            ok("a wrong value fails: services.ingest.replicas = \"two\" refused by values.schema.json")
        else:
            fail(f"services.ingest.replicas = \"two\" failed for another reason: {e}")
    try:
        chart.render({"services": {"compactor": {"confg": {}}}})
        fail("the chart accepted an unknown key services.compactor.confg")
    except Exception as e:  # noqa: BLE001
        if "confg" in str(e):
            ok("a misspelt key fails: services.compactor.confg refused by values.schema.json")
        else:
            fail(f"services.compactor.confg failed for another reason: {e}")
    docs = chart.render({})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    deployment["spec"]["replicas"] = "2"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wrong.yaml"
        path.write_text(yaml.safe_dump(deployment))
        passed, out = kubernetes_validate([path])
    if passed:
        fail("kubernetes-validate accepted containerPort: \"http\"")
    else:
        ok("a wrong manifest fails: kubernetes-validate refuses containerPort: \"http\"")
    bad = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
           "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicaCount": "many", "triggers": []}}
    if crd_schemas.validate(bad):
        ok("a wrong custom resource fails: ScaledObject maxReplicaCount: \"many\" refused")
    else:
        fail("the ScaledObject schema accepted maxReplicaCount: \"many\"")


def check_k8s_dir() -> None:
    k8s = ROOT / "k8s"
    files = sorted(k8s.glob("*.yaml"))
    if not files:
        fail("k8s/ has no manifests")
        return
    expected = generate_k8s.generate()
    present = {p.name for p in files}
    for name, text in expected.items():
        if name not in present:
            fail(f"k8s/{name} is missing: run python3 scripts/deploy/generate_k8s.py")
        elif (k8s / name).read_text() != text:
            fail(f"k8s/{name} differs from what the chart generates: run python3 scripts/deploy/generate_k8s.py")
    for name in present - set(expected):
        fail(f"k8s/{name} is not generated by scripts/deploy/generate_k8s.py")
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    for res in kustomization["resources"]:
        if not (k8s / res).is_file():
            fail(f"k8s/kustomization.yaml names a missing resource {res}")
    docs = []
    for p in files:
        if p.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    validate_docs("k8s/", docs)
    check_security("k8s/", docs)
    kinds = {d["kind"] for d in docs}
    for kind in ("Namespace", "Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Job"):
        if kind not in kinds:
            fail(f"k8s/ has no {kind}")


# ---------------------------------------------------------------- compose
def check_compose() -> None:
    path = ROOT / "docker-compose.yml"
    exe = shutil.which("docker-compose")
    if exe is None:
        fail("docker-compose (Debian's 1.29) not found: scripts/install-deps.sh installs it")
    else:
        proc = subprocess.run([exe, "-f", str(path), "config", "-q"], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            fail(f"docker-compose config: {proc.stderr.strip()}")
        else:
            ok("docker-compose config: docker-compose.yml is valid")
    compose = yaml.safe_load(path.read_text())
    services = compose["services"]
    for name, svc in services.items():
        image = svc.get("image")
        if not image:
            fail(f"compose {name}: no image")
            continue
        if "build" in svc:
            build = svc["build"]
            context = ROOT / (build.get("context", ".") if isinstance(build, dict) else build)
            dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
            if not dockerfile.is_file():
                fail(f"compose {name}: builds from a missing {dockerfile}")
        else:
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                fail(f"compose {name}: image {image} is not pinned to a version")
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith((".", "/")) and not (ROOT / source).exists():
                fail(f"compose {name}: mounts missing {source}")
        for dep in svc.get("depends_on", {}) or {}:
            if dep not in services:
                fail(f"compose {name}: depends on unknown service {dep}")
        env = svc.get("environment", {}) or {}
        for var, value in env.items():
            if var.startswith("STOREPULSE_") and str(value).startswith("/etc/"):
                mounted = [v.split(":")[1] for v in svc.get("volumes", []) if isinstance(v, str)]
                if str(value) not in mounted:
                    fail(f"compose {name}: {var}={value} is not a mounted file")
    storepulse_services = [s for s, v in services.items() if v.get("image") == "storepulse:dev"]
    run = {v["command"][1] for v in services.values() if v.get("command", [None])[0] == "run"}
    for wanted in ("ingest", "compactor", "rules", "forecaster", "notifier"):
        if wanted not in run:
            fail(f"compose: no container runs {wanted}")
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {t.split(":")[0] for job in scrape["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    for svc in run:
        if svc not in targets:
            fail(f"compose: Prometheus does not scrape {svc}")
    ok(f"compose: {len(services)} services ({len(storepulse_services)} from the StorePulse image), images pinned, mounts exist, Prometheus scrapes {len(run)} services")


# ---------------------------------------------------------------- image
def docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore (its simple forms: dir/, **/dir/, *.ext, name, !keep)
    leaves `path` (relative, /-separated) out of the build context."""
    import fnmatch

    ignored = False
    for pat in patterns:
        keep = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/")) for p in prefixes)
        if hit:
            ignored = not keep
    return ignored


def check_image_context() -> None:
    """Everything `cargo build` reads is in the Docker build context: the
    workspace members' manifests and sources, every declared bin/bench/test/example
    target, the embedded schemas and migrations."""
    import tomllib

    patterns = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")]
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    needed = ["Cargo.toml", "Cargo.lock", "src/main.rs", "schemas", "services/runtime/migrations"]
    for member in manifest["workspace"]["members"]:
        if member == ".":
            continue
        needed += [f"{member}/Cargo.toml", f"{member}/src"]
    for member in ["."] + [m for m in manifest["workspace"]["members"] if m != "."]:
        m = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        for kind, folder in (("bin", "src/bin"), ("bench", "benches"), ("test", "tests"), ("example", "examples")):
            for target in m.get(kind, []):
                path = target.get("path") or f"{folder}/{target['name']}.rs"
                needed.append(str(Path(member) / path).removeprefix("./"))
    missing = [p for p in needed if docker_ignored(p, patterns) or not (ROOT / p).exists()]
    for p in missing:
        fail(f"Docker build context: {p} is needed by cargo but excluded by .dockerignore or missing")
    if docker_ignored("src/main.rs", ["src/"]) is not True or docker_ignored("services/x/target/y", patterns) is not True:
        fail("Docker build context: the .dockerignore matcher is broken")
    if not missing:
        ok(f"Docker build context: the {len(needed)} paths cargo needs are in it")
    dockerfile = (ROOT / "Dockerfile").read_text()
    for feature in re.findall(r"--features\s+([\w,-]+)", dockerfile):
        for f in feature.split(","):
            if f not in manifest.get("features", {}):
                fail(f"Dockerfile builds with feature {f}, which Cargo.toml does not declare")


# ---------------------------------------------------------------- metrics
CONSTRUCTOR = re.compile(
    r"(?:\bOpts::new|\bHistogramOpts::new|\b(?:Int)?(?:Counter|Gauge)::new|\bHistogram::new|\bopts!|\bhistogram_opts!)\s*\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\""
)
NAMESPACE = re.compile(r"Registry::new_custom\(\s*Some\(\s*\"([a-z_]+)\"")
METRIC_REF = re.compile(r"\bstorepulse_[a-z0-9_]+\b")


def registered_metrics() -> tuple[set[str], set[str]]:
    """(names, histogram names) every service registers, from the source: each
    metric constructor's name, under the registry's namespace prefix."""
    sources = [p for d in ("services", "src") for p in (ROOT / d).rglob("*.rs")]
    namespaces = set()
    names, histograms = set(), set()
    for p in sources:
        text = p.read_text()
        namespaces.update(NAMESPACE.findall(text))
    if len(namespaces) != 1:
        fail(f"metrics: expected one registry namespace in the code, found {sorted(namespaces)}")
        return set(), set()
    ns = namespaces.pop()
    for p in sources:
        text = p.read_text()
        # Test modules register throw-away metrics; only the code before them counts.
        text = text.split("#[cfg(test)]")[0]
        for m in CONSTRUCTOR.finditer(text):
            full = f"{ns}_{m.group(1)}"
            names.add(full)
            if "Histogram" in m.group(0) or "histogram" in m.group(0):
                histograms.add(full)
    return names, histograms


def referenced_metrics() -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    files = list((ROOT / "helm/storepulse/files/grafana").glob("*.json")) + [ROOT / "helm/storepulse/files/prometheus/alerts.yaml"]
    for f in files:
        for name in METRIC_REF.findall(f.read_text()):
            refs.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    return refs


def unknown_metrics(refs: dict[str, set[str]], names: set[str], histograms: set[str]) -> list[str]:
    unknown = []
    for name in sorted(refs):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in names or (base != name and base in histograms):
            continue
        unknown.append(name)
    return unknown


def check_metrics() -> None:
    names, histograms = registered_metrics()
    if len(names) < 20:
        fail(f"metrics: only {len(names)} registered metrics found in the code; is the scan broken?")
    refs = referenced_metrics()
    unknown = unknown_metrics(refs, names, histograms)
    for name in unknown:
        fail(f"metrics: {name} (in {', '.join(sorted(refs[name]))}) is registered by no service")
    # The check itself can fail.
    if unknown_metrics({"storepulse_ingest_nonexistent_total": {"x"}, "storepulse_notifier_deliveries_total_bucket": {"x"}}, names, histograms) != [
        "storepulse_ingest_nonexistent_total", "storepulse_notifier_deliveries_total_bucket"
    ]:
        fail("metrics: the check does not catch an unregistered name")
    if not unknown:
        ok(f"metrics: all {len(refs)} metric names in dashboards and alerts are registered ({len(names)} registered in the code)")


# ---------------------------------------------------------------- dashboards, alerts
def check_dashboards_and_alerts() -> None:
    provisioned = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/storepulse.yaml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    for f in sorted((ROOT / "helm/storepulse/files/grafana").glob("*.json")):
        d = json.loads(f.read_text())
        variables = {v["name"]: v for v in d["templating"]["list"] if v["type"] == "datasource"}
        for name, var in variables.items():
            if var["current"]["value"] not in uids:
                fail(f"{f.name}: data source variable {name} defaults to unprovisioned uid {var['current']['value']}")
        if not d.get("uid") or not d.get("panels"):
            fail(f"{f.name}: no uid or no panels")
        for p in d["panels"]:
            uid = p["datasource"]["uid"].strip("${}")
            if uid not in variables:
                fail(f"{f.name}: panel {p['title']!r} uses unknown data source {p['datasource']['uid']}")
            for t in p["targets"]:
                if not (t.get("expr") or t.get("rawSql")):
                    fail(f"{f.name}: panel {p['title']!r} has an empty query")
        ok(f"dashboard {f.name}: {len(d['panels'])} panels on provisioned data sources")
    rules = yaml.safe_load((ROOT / "helm/storepulse/files/prometheus/alerts.yaml").read_text())
    count = 0
    for group in rules["groups"]:
        for rule in group["rules"]:
            count += 1
            for key in ("alert", "expr"):
                if not rule.get(key):
                    fail(f"alerts.yaml: a rule without {key}: {rule}")
            if rule.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
                fail(f"alerts.yaml: {rule.get('alert')}: severity must be info, warning or critical")
            if not rule.get("annotations", {}).get("summary"):
                fail(f"alerts.yaml: {rule.get('alert')}: no summary")
            if rule["expr"].count("(") != rule["expr"].count(")"):
                fail(f"alerts.yaml: {rule.get('alert')}: unbalanced parentheses")
    ok(f"alerts.yaml: {count} alerting rules well formed")


def main() -> int:
    sections = sys.argv[1:] or ["chart", "wrong", "k8s", "compose", "image", "metrics", "dashboards"]
    steps = {
        "chart": check_chart,
        "wrong": check_wrong_values_fail,
        "k8s": check_k8s_dir,
        "compose": check_compose,
        "image": check_image_context,
        "metrics": check_metrics,
        "dashboards": check_dashboards_and_alerts,
    }
    for s in sections:
        steps[s]()
    if failures:
        print(f"\ndeployment checks: {len(failures)} failed")
        return 1
    print("\ndeployment checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
