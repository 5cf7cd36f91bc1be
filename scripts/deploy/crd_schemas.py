"""Schemas of the custom resources the chart can render (ServiceMonitor,
PrometheusRule from the Prometheus Operator; ScaledObject, TriggerAuthentication
from KEDA): the subset of their CRDs' OpenAPI schemas the chart uses, strict about
unknown fields, so a typo or a wrong type fails like kubernetes-validate fails on
core kinds (which it has no schemas for)."""

from __future__ import annotations

import jsonschema

STR = {"type": "string"}
INT = {"type": "integer"}
STR_MAP = {"type": "object", "additionalProperties": STR}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP},
    "additionalProperties": False,
}


def resource(api_version: str, kind: str, spec: dict) -> dict:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
        "additionalProperties": False,
    }


LABEL_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": STR_MAP, "matchExpressions": {"type": "array"}},
    "additionalProperties": False,
}

SCHEMAS = {
    "ServiceMonitor": resource("monitoring.coreos.com/v1", "ServiceMonitor", {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {"type": "object"},
            "jobLabel": STR,
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {"port": STR, "path": STR, "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                               "scrapeTimeout": STR, "scheme": {"enum": ["http", "https"]}},
                "additionalProperties": False,
            }},
        },
        "additionalProperties": False,
    }),
    "PrometheusRule": resource("monitoring.coreos.com/v1", "PrometheusRule", {
        "type": "object",
        "required": ["groups"],
        "properties": {"groups": {"type": "array", "items": {
            "type": "object",
            "required": ["name", "rules"],
            "properties": {"name": STR, "interval": STR, "rules": {"type": "array", "items": {
                "type": "object",
                "required": ["expr"],
                "properties": {"alert": STR, "record": STR, "expr": STR, "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d|w|y)$"},
                               "labels": STR_MAP, "annotations": STR_MAP},
                "additionalProperties": False,
            }}},
            "additionalProperties": False,
        }}},
        "additionalProperties": False,
    }),
    "ScaledObject": resource("keda.sh/v1alpha1", "ScaledObject", {
        "type": "object",
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {"type": "object", "required": ["name"], "properties": {"name": STR, "apiVersion": STR, "kind": STR}, "additionalProperties": False},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "pollingInterval": INT,
            "cooldownPeriod": INT,
            "idleReplicaCount": INT,
            "triggers": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "required": ["type", "metadata"],
                "properties": {
                    "type": {"enum": ["kafka", "cpu", "memory", "prometheus"]},
                    "name": STR,
                    "metricType": {"enum": ["Utilization", "AverageValue", "Value"]},
                    "metadata": STR_MAP,
                    "authenticationRef": {"type": "object", "required": ["name"], "properties": {"name": STR, "kind": STR}, "additionalProperties": False},
                },
                "additionalProperties": False,
            }},
        },
        "additionalProperties": False,
    }),
    "TriggerAuthentication": resource("keda.sh/v1alpha1", "TriggerAuthentication", {
        "type": "object",
        "properties": {"secretTargetRef": {"type": "array", "items": {
            "type": "object",
            "required": ["parameter", "name", "key"],
            "properties": {"parameter": STR, "name": STR, "key": STR},
            "additionalProperties": False,
        }}},
        "additionalProperties": False,
    }),
}


def validate(doc: dict) -> list[str]:
    """The schema errors of a custom resource (empty: valid)."""
    schema = SCHEMAS[doc["kind"]]
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(doc)]
