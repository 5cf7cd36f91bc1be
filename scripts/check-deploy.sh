#!/usr/bin/env bash
# Static checks of the deployment files (no Docker engine, no cluster): the Helm
# chart lints and renders for default/dev/prod values and a wrong value fails; the
# rendered manifests and k8s/ validate against the Kubernetes 1.31 API schemas, and
# k8s/ is what the chart generates; docker-compose.yml is valid and refers only to
# pinned images and existing files; the Docker build context holds what cargo
# needs; every metric in the dashboards and alerting
# rules is registered by a service. (That every Helm config value reaches its
# service is the Rust test tests/deploy.rs, run by `cargo test`.)
# Needs what scripts/install-deps.sh installs: helm-python-sdk, kubernetes-validate,
# PyYAML, jsonschema (PyPI) and docker-compose (Debian).
set -euo pipefail
cd "$(dirname "$0")/deploy"
exec python3 check_deploy.py "$@"
