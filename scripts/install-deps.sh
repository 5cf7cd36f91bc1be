#!/usr/bin/env bash
# Installs what the local stack and the tests need, skipping what is present:
#   - the nisshi Kafka-protocol broker (cargo +nightly, --locked; one-time, ~20 min)
#   - the PostgreSQL server binaries (Debian package, only when missing)
#   - Python's fastavro (PyPI, only when missing): the independent Avro implementation
#     the codec interop test (services/runtime/tests/fastavro_interop.rs) checks against
#   - the deployment checks' tools (scripts/check-deploy.sh, tests/deploy.rs): PyPI's
#     helm-python-sdk (the Helm v4 library, no helm binary), kubernetes-validate
#     (offline Kubernetes API schemas), PyYAML and jsonschema, and Debian's
#     docker-compose 1.29 (`docker-compose config` validates docker-compose.yml)
#   - the TimescaleDB 2.28.3 extension for the server's PostgreSQL (built from the
#     vendored source archive when missing; needs postgresql-server-dev-<major> and
#     cmake). Without archive or build tools the read store runs on plain PostgreSQL,
#     which is said here and by `storepulse dev` at start.
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

# Deployment checks. Each is skipped when present (installs need the registries; the
# checks themselves run offline).
missing_py=()
python3 -c 'import helm_python' >/dev/null 2>&1 || missing_py+=(helm-python-sdk)
python3 -c 'import kubernetes_validate' >/dev/null 2>&1 || missing_py+=(kubernetes-validate)
python3 -c 'import yaml' >/dev/null 2>&1 || missing_py+=(PyYAML)
python3 -c 'import jsonschema' >/dev/null 2>&1 || missing_py+=(jsonschema)
if [ ${#missing_py[@]} -eq 0 ]; then
  echo "deployment check tools (helm-python-sdk, kubernetes-validate): installed"
else
  echo "deployment check tools: installing ${missing_py[*]} from PyPI ..."
  python3 -m pip install --quiet "${missing_py[@]}"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  # pip's scripts directory (system or user) may not be on PATH.
  PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):${HOME}/.local/bin:$PATH"
  export PATH
fi
if command -v docker-compose >/dev/null 2>&1; then
  echo "docker-compose: installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "docker-compose: installing the Debian package ..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
else
  echo "docker-compose missing: install Debian's docker-compose (the deployment checks need it)" >&2
  exit 1
fi

# TimescaleDB: there is no Debian package for PostgreSQL 15 here, so it is built from
# the source archive of tag 2.28.3 (the last line supporting PostgreSQL 15).
TIMESCALEDB_VERSION=2.28.3
TIMESCALEDB_SHA256=ec2f7de0ba53a473c01e0a57e09053898c6b1f7487228caff0f1d31c8cb2dedb
repo_root="$(cd "$(dirname "$0")/.." && pwd)"

pg_bin_dir() {
  if [ -n "${STOREPULSE_PG_BIN:-}" ]; then echo "$STOREPULSE_PG_BIN"; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -1
}

timescaledb_archive() {
  local candidate
  for candidate in "${STOREPULSE_TIMESCALEDB_SOURCE:-}" \
    "$repo_root/../shared/vendor/timescaledb-${TIMESCALEDB_VERSION}.tar.gz" \
    "/work/shared/vendor/timescaledb-${TIMESCALEDB_VERSION}.tar.gz"; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

install_timescaledb() {
  local bindir major pg_config libdir archive work
  bindir="$(pg_bin_dir)"
  major="$(basename "$(dirname "$bindir")")"
  pg_config="/usr/lib/postgresql/${major}/bin/pg_config"
  [ -x "$pg_config" ] || pg_config="$(command -v pg_config || true)"
  libdir="$([ -n "$pg_config" ] && "$pg_config" --pkglibdir 2>/dev/null || echo "/usr/lib/postgresql/${major}/lib")"
  if [ -f "$libdir/timescaledb-${TIMESCALEDB_VERSION}.so" ]; then
    echo "timescaledb ${TIMESCALEDB_VERSION}: installed (PostgreSQL ${major})"
    return 0
  fi
  if ! archive="$(timescaledb_archive)"; then
    echo "timescaledb: source archive not found (set STOREPULSE_TIMESCALEDB_SOURCE); the read store will run on plain PostgreSQL"
    return 0
  fi
  if ! echo "${TIMESCALEDB_SHA256}  ${archive}" | sha256sum -c --status; then
    echo "timescaledb: ${archive} does not have the expected sha256; not building it" >&2
    return 1
  fi
  if [ ! -f "/usr/include/postgresql/${major}/server/postgres.h" ] || ! command -v cmake >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      if [ ! -f "/usr/include/postgresql/${major}/server/postgres.h" ]; then
        echo "timescaledb: installing postgresql-server-dev-${major} (Debian) ..."
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-${major}" >/dev/null
      fi
    fi
    if ! command -v cmake >/dev/null 2>&1; then
      echo "timescaledb: installing cmake (PyPI) ..."
      python3 -m pip install --quiet cmake
      # pip's scripts directory (system or user) may not be on PATH yet.
      PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):${HOME}/.local/bin:$PATH"
      export PATH
      hash -r
    fi
  fi
  if [ ! -f "/usr/include/postgresql/${major}/server/postgres.h" ] || ! command -v cmake >/dev/null 2>&1; then
    echo "timescaledb: postgresql-server-dev-${major} or cmake missing; the read store will run on plain PostgreSQL"
    return 0
  fi
  echo "timescaledb ${TIMESCALEDB_VERSION}: building from ${archive} (about two minutes) ..."
  work="$(mktemp -d)"
  tar -xzf "$archive" -C "$work"
  (
    cd "$work"/timescaledb*/ &&
      ./bootstrap -DPG_CONFIG="$pg_config" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
        -DWARNINGS_AS_ERRORS=OFF -DGENERATE_DOWNGRADE_SCRIPT=OFF >"$work/bootstrap.log" 2>&1 &&
      make -C build -j2 install >"$work/build.log" 2>&1
  ) || {
    echo "timescaledb: build failed; logs in $work" >&2
    return 1
  }
  rm -rf "$work"
  echo "timescaledb ${TIMESCALEDB_VERSION}: installed"
}

install_timescaledb
