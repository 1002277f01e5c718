#!/usr/bin/env bash
# DPO step time and peak memory: Flywheel's candle trainer vs PyTorch + PEFT, same weights, same
# data (SmolLM2-135M-Instruct, LoRA r=16 on q/k/v/o, 4 pairs, each sequence 128 prompt + 128
# response tokens, f32, CPU). Not part of CI; record results in bench/RESULTS.md.
#
#   bench/dpo_step.sh [HF model dir]        (default: `flywheel model fetch`'s imported SmolLM2)
#   STEPS=5 THREADS=4 VENV=bench/.venv-torch TORCH_INDEX=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${STEPS:-5}
THREADS=${THREADS:-$(nproc)}
VENV=${VENV:-bench/.venv-torch}
MODEL=${1:-$(cargo run --release -q -p flywheel-server -- model fetch | awk '$1 == "hf" {print $2}')}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} torch
    "$VENV/bin/pip" install -q transformers peft safetensors
fi
DATA=$(mktemp -d)/pairs.json
"$VENV/bin/python" bench/dpo_step.py make-data --model "$MODEL" --out "$DATA"
echo "model $MODEL, $STEPS measured steps, $THREADS threads"
"$VENV/bin/python" bench/dpo_step.py run --model "$MODEL" --data "$DATA" --steps "$STEPS" --threads "$THREADS"
cargo build --release -q --bin flywheel
FLYWHEEL=${CARGO_TARGET_DIR:-target}/release/flywheel
RAYON_NUM_THREADS=$THREADS "$FLYWHEEL" bench dpo-step --model "$MODEL" --data "$DATA" --steps "$STEPS"
RAYON_NUM_THREADS=$THREADS "$FLYWHEEL" bench dpo-step --model "$MODEL" --data "$DATA" --steps "$STEPS" --checkpoint
