#!/usr/bin/env bash
# Installs what the local stack and the tests need, skipping what is present:
#   - the nisshi Kafka-protocol broker (cargo +nightly, --locked; one-time, ~20 min)
#   - the PostgreSQL server binaries (Debian package, only when missing)
#   - Python's fastavro (PyPI, only when missing): the independent Avro implementation
#     the codec interop test (services/runtime/tests/fastavro_interop.rs) checks against
set -euo pipefail

NISSHI_VERSION=0.8.1
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

have_nisshi() {
  command -v nisshi >/dev/null 2>&1 &&
    cargo install --list 2>/dev/null | grep -q "^nisshi v${NISSHI_VERSION}:"
}

if have_nisshi; then
  echo "nisshi ${NISSHI_VERSION}: installed"
else
  echo "nisshi ${NISSHI_VERSION}: one-time install, about 20 minutes on 2 cores ..."
  cargo +nightly install nisshi --version "${NISSHI_VERSION}" --locked
fi

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${STOREPULSE_PG_BIN:-}" ]; then
  echo "postgresql server binaries: installed"
elif [ "$(id -u)" = 0 ]; then
  echo "postgresql server binaries: installing the Debian package ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
else
  echo "PostgreSQL server binaries missing: install postgresql (or set STOREPULSE_PG_BIN)" >&2
  exit 1
fi

# fastavro: the codec's interop test fails without it (it does not skip).
if python3 -c 'import fastavro' >/dev/null 2>&1; then
  echo "fastavro: installed"
else
  echo "fastavro: installing from PyPI ..."
  python3 -m pip install --quiet fastavro
fi
