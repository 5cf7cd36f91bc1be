#!/usr/bin/env bash
# The whole test suite: installs what is missing, checks formatting and lints, then
# runs every test (unit and end-to-end; the tests start their own Postgres and broker).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# pip's scripts directory (kubernetes-validate) may not be on PATH on a fresh machine.
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):${HOME}/.local/bin"
export PATH

echo "== deployment checks (scripts/check-deploy.sh)"
scripts/check-deploy.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast -- --test-threads=4 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "build size: $(du -sh target 2>/dev/null | cut -f1) in target/; $(df -h . | awk 'NR==2 {print $4}') free"
echo "total: ${passed} passed, ${failed} failed"
exit "$status"
