#!/usr/bin/env bash
# Scaling out, once: export Flywheel's judgments as TRL DPO data, train a LoRA with TRL's
# DPOTrainer + PEFT (CPU), and register the PEFT directory with the running server.
#
#   FLYWHEEL_API_KEY=fw_… FLYWHEEL_ADAPTER_ROOT=/srv/flywheel/adapters \
#   DATABASE_URL=sqlite:///srv/flywheel/flywheel.db bash examples/trl_dpo/round_trip.sh
#
# Environment (defaults in brackets):
#   FLYWHEEL_URL           the running server [http://127.0.0.1:8000]
#   FLYWHEEL_API_KEY       an admin key (registration is an admin route) [required]
#   FLYWHEEL_ADAPTER_ROOT  the server's --adapter-root; the adapter is written under it [required]
#   DATABASE_URL           the server's store, read by `flywheel export` [sqlite://flywheel-data/flywheel.db]
#   FLYWHEEL_BIN           the flywheel binary [flywheel on PATH, else ~/.cache/flywheel/target/release/flywheel]
#   FLYWHEEL_MODEL_DIR     the base model the server serves, as an HF directory
#                          [~/.cache/flywheel/models/smollm2-135m-instruct/hf, from `flywheel model fetch`]
#   TRL_VENV               Python venv with requirements.txt installed; made if missing
#                          [~/.cache/flywheel/trl-venv]
#   RUN_NAME               the adapter's directory name under the root [trl-dpo-<UTC time>]
#   EXPORT_ADAPTER         only export groups served by this adapter version [all]
#   STEPS LR RANK BETA SEED BATCH MAX_LENGTH   training [20 5e-5 8 0.1 0 2 256]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${FLYWHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flywheel}"
url="${FLYWHEEL_URL:-http://127.0.0.1:8000}"
key="${FLYWHEEL_API_KEY:?set FLYWHEEL_API_KEY to an admin key}"
root="${FLYWHEEL_ADAPTER_ROOT:?set FLYWHEEL_ADAPTER_ROOT to the --adapter-root of the server}"
model="${FLYWHEEL_MODEL_DIR:-$cache/models/smollm2-135m-instruct/hf}"
venv="${TRL_VENV:-$cache/trl-venv}"
bin="${FLYWHEEL_BIN:-$(command -v flywheel || echo "$cache/target/release/flywheel")}"
run="${RUN_NAME:-trl-dpo-$(date -u +%Y%m%dT%H%M%SZ)}"
export DATABASE_URL="${DATABASE_URL:-sqlite://flywheel-data/flywheel.db}"

[ -x "$bin" ] || { echo "no flywheel binary at $bin (set FLYWHEEL_BIN)" >&2; exit 1; }
[ -f "$model/config.json" ] || { echo "no HF model at $model (run: $bin model fetch)" >&2; exit 1; }
curl -sf "$url/ready" >/dev/null || { echo "server at $url is not ready" >&2; exit 1; }
mkdir -p "$root"
out="$root/$run"
[ ! -e "$out" ] || { echo "$out already exists" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  echo "== Python venv with TRL in $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== 1/3 export: flywheel export --format dpo"
"$bin" export --format dpo --out "$work/prefs.jsonl" ${EXPORT_ADAPTER:+--adapter "$EXPORT_ADAPTER"}
pairs="$(wc -l <"$work/prefs.jsonl")"
echo "$pairs preference pairs; manifest:"
cat "$work/prefs.jsonl.manifest.json"; echo
[ "$pairs" -gt 0 ] || { echo "nothing to train on: judge some groups (outcome a or b) first" >&2; exit 1; }

echo "== 2/3 train: TRL DPOTrainer + PEFT LoRA into $out"
start=$(date +%s)
"$venv/bin/python" "$here/train_dpo.py" --data "$work/prefs.jsonl" --model "$model" --out "$out" \
  --steps "${STEPS:-20}" --lr "${LR:-5e-5}" --rank "${RANK:-8}" --beta "${BETA:-0.1}" \
  --seed "${SEED:-0}" --batch "${BATCH:-2}" --max-length "${MAX_LENGTH:-256}"
echo "trained in $(( $(date +%s) - start )) s"

echo "== 3/3 register: POST $url/v1/adapters"
"$venv/bin/python" - "$run" "$out/training_summary.json" >"$work/register-body.json" <<'EOF'
import json, sys
run, summary = sys.argv[1], json.load(open(sys.argv[2]))
note = (f"TRL {summary['versions']['trl']} DPO+LoRA r={summary['rank']}: {summary['pairs']} pairs, "
        f"{summary['steps']} steps, lr={summary['lr']}, beta={summary['beta']}, "
        f"loss {summary['loss_first']:.4f} -> {summary['loss_last']:.4f}")
print(json.dumps({"path": run, "algorithm": "trl-dpo", "note": note}))
EOF
cat "$work/register-body.json"
code="$(curl -s -o "$work/register.json" -w '%{http_code}' -X POST "$url/v1/adapters" \
  -H "Authorization: Bearer $key" -H 'Content-Type: application/json' --data-binary "@$work/register-body.json")"
echo "HTTP $code"
cat "$work/register.json"; echo
[ "$code" = 201 ] || { echo "registration refused" >&2; exit 1; }
version="$("$venv/bin/python" -c 'import json, sys; a = json.load(open(sys.argv[1])); print(a["version"], a["status"])' "$work/register.json")"
echo "registered version ${version% *} (status ${version#* })"
echo "the arena judges it against the incumbent: curl -H \"Authorization: Bearer \$FLYWHEEL_API_KEY\" $url/v1/arena"
