"""Writes k8s/: plain Kubernetes manifests per service, rendered from the Helm chart
with the values below (Helm's own labels left out), plus a Namespace and a
kustomization. The chart is the single source; scripts/check-deploy.sh fails when
k8s/ is not what this generates.

    python3 scripts/deploy/generate_k8s.py
"""

from __future__ import annotations

import yaml

import chart

NAMESPACE = "storepulse"
HEADER = (
    "# Generated from helm/storepulse by scripts/deploy/generate_k8s.py (values in that\n"
    "# script); edit the chart, then regenerate. Apply with: kubectl apply -k k8s/\n"
)
# Production-shaped defaults of the chart, as plain manifests.
PLAIN_VALUES = {
    "plainManifests": True,
    "image": {"repository": "ghcr.io/storepulse/storepulse", "tag": "0.1.0"},
}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def dump(docs: list[dict]) -> str:
    return HEADER + "".join("---\n" + yaml.dump(d, Dumper=_Dumper, sort_keys=False, width=100) for d in docs)


def generate() -> dict[str, str]:
    """File name → content of every file in k8s/."""
    docs = chart.render(PLAIN_VALUES, name="storepulse", namespace=NAMESPACE)
    files: dict[str, list[dict]] = {}
    order = ["ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "Job"]
    for d in sorted(docs, key=lambda d: (order.index(d["kind"]) if d["kind"] in order else 99, d["metadata"]["name"])):
        labels = d["metadata"].get("labels", {})
        component = labels.get("app.kubernetes.io/component", "storepulse")
        name = {"storepulse": "serviceaccount", "init": "init-job"}.get(component, component)
        files.setdefault(f"{name}.yaml", []).append(d)
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": "storepulse",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
            },
        },
    }
    out = {"namespace.yaml": dump([namespace])}
    out.update({name: dump(docs) for name, docs in files.items()})
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": sorted(out),
    }
    out["kustomization.yaml"] = (
        HEADER
        + "# Needs a Secret storepulse-postgres with key `url` (postgres://user:password@host/db):\n"
        + "#   kubectl -n storepulse create secret generic storepulse-postgres --from-literal=url=...\n"
        + yaml.dump(kustomization, sort_keys=False)
    )
    return out


def main() -> None:
    target = chart.ROOT / "k8s"
    target.mkdir(exist_ok=True)
    files = generate()
    for old in target.glob("*.yaml"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (target / name).write_text(text)
        print(f"k8s/{name}")


if __name__ == "__main__":
    main()
