"""Render the StorePulse Helm chart offline (helm-python-sdk: the real Helm v4
library, no helm binary, no cluster), for the deployment checks and the generation
of k8s/."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "storepulse"
RELEASE = "storepulse"
NAMESPACE = "storepulse"


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def values_file(name: str | None) -> dict:
    """The values of values-<name>.yaml (None or "default": none)."""
    if name in (None, "default"):
        return {}
    return yaml.safe_load((CHART / f"values-{name}.yaml").read_text()) or {}


def render(values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> list[dict]:
    """Every manifest the chart renders with `values` (over values.yaml), in a
    stable order (template path, then position)."""
    import helm_python as helm

    chart = helm.Chart.load(os.fspath(CHART))
    rendered = chart.render(values=values, name=name, namespace=namespace, is_install=True, revision=1)
    docs = []
    for path in sorted(rendered):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                docs.append(doc)
    return docs


def lint(values: dict) -> dict:
    import helm_python as helm

    return helm.lint(os.fspath(CHART), values, strict=True, kube_version="v1.31.0")


def merged_values(values: dict) -> dict:
    """values.yaml with `values` over it, as the templates see them."""
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    return deep_merge(base, values)
