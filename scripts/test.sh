#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, then
# runs every test (unit and end-to-end; the tests start their own Postgres and broker).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked -- --test-threads=4
