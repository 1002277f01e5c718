#!/usr/bin/env bash
# Schema fuzzing: schemathesis generates requests for every operation of the OpenAPI document that
# the real `flywheel serve` publishes (tiny random-weight model, fresh SQLite store, admin key) and
# fails on a 5xx, a response body that does not validate against its schema, or a status or content
# type the document does not declare. tests/fuzz/seed.py first stores a few groups and judgments
# (checking those answers too); tests/fuzz/hooks.py keeps generation lengths small.
#
# Run by scripts/test.sh after the release build; alone: scripts/fuzz.sh.
#   FLYWHEEL_FUZZ_EXAMPLES  cases per operation in the fuzzing phase (default 12: with the coverage
#                           and stateful phases, about 1,400 cases over the 19 operations, ~10 s)
#   FLYWHEEL_FUZZ_SEED      schemathesis seed, to replay a run (random by default; the run prints it)
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${FLYWHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"
target="${CARGO_TARGET_DIR:-target}"
bin="${FLYWHEEL_BIN:-$target/release/flywheel}"
examples="${FLYWHEEL_FUZZ_EXAMPLES:-12}"
venv="$cache/venv-test"

if [ ! -x "$venv/bin/schemathesis" ]; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/e2e/requirements.txt
fi

workdir="$(mktemp -d)"
"$bin" model tiny "$workdir/model" >/dev/null
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
admin_key="fw_fuzz_$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
FLYWHEEL_ADMIN_KEY="$admin_key" DATABASE_URL="sqlite://$workdir/fuzz.db" \
  "$bin" serve --model "$workdir/model" --no-worker --port "$port" >"$workdir/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$workdir"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
  kill -0 $server 2>/dev/null || { cat "$workdir/server.log"; exit 1; }
  sleep 1
done

# Data the fuzzer's random ids never reach, each answer checked against the document.
"$venv/bin/python" tests/fuzz/seed.py "http://127.0.0.1:$port" "$admin_key"

seed=()
[ -n "${FLYWHEEL_FUZZ_SEED:-}" ] && seed=(--seed "$FLYWHEEL_FUZZ_SEED")
status=0
# From the temporary directory: schemathesis keeps a crash cache (.schemathesis/) in its working one.
# Hypothesis's health checks judge the generator, not the server (a string path parameter once
# tripped `filter_too_much` at random), so they never fail the run; the four checks below do.
hooks="$PWD/tests/fuzz/hooks.py"
(cd "$workdir" && SCHEMATHESIS_HOOKS="$hooks" "$venv/bin/schemathesis" run \
  "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance \
  --header "Authorization: Bearer $admin_key" \
  --max-examples "$examples" \
  --request-timeout 60 \
  --generation-database none \
  --suppress-health-check=all \
  --no-color \
  "${seed[@]}") 2>&1 | tee "$workdir/fuzz.out" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== server log (last 50 lines)"
  tail -n 50 "$workdir/server.log"
fi
# One plain closing line, so the run's outcome reads the same whatever tool printed last.
counts="$(grep -oE '[0-9]+ generated, [0-9]+ passed' "$workdir/fuzz.out" | tail -n 1 || true)"
generated="$(printf '%s' "$counts" | awk '{print $1}')"
passed="$(printf '%s' "$counts" | awk '{print $3}')"
if [ "$status" -eq 0 ] && [ -n "$passed" ]; then
  echo "fuzz: $passed passed, $((generated - passed)) failed"
fi
exit "$status"
