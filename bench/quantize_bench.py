#!/usr/bin/env python3
"""Quantized serving (`flywheel serve --quantize`): speed and quality against F32, one run.

For each quantization (F32, then the in-situ types) it serves SmolLM2-135M-Instruct's F32 import
with `--quantize`, and measures
  - speed: output tokens/s of streamed chat completions at concurrency 1 through `flywheel serve`,
    and of the bare mistral.rs engine loaded the same way (`flywheel bench engine --quantize`);
  - quality against F32: on a fixed set of questions, greedy answers (temperature 0) with their
    log-probs; the share of answers identical to F32's, the share of tokens before the first
    difference, and the mean |log-prob difference| over the tokens both chose.

    python3 bench/quantize_bench.py [--quantize none,q8_0,q4k,q4_0] [--max-tokens 48]
    FLYWHEEL_BIN=... python3 bench/quantize_bench.py

Writes bench/quantize/results.json and prints the markdown table for bench/RESULTS.md. Needs a
release build and `flywheel model fetch` (both cached); standard library only.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from gpu_check import Server, chat, last_json_line, stream_chat, summarize_load
from serve_bench import FLYWHEEL, ROOT
from serve_bench import PROMPTS as SPEED_PROMPTS

QUESTIONS = [
    "What is the capital of France?",
    "How many days are in a leap year?",
    "Name three primary colors.",
    "What does a thermometer measure?",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Give one reason to drink water.",
    "What is 12 times 12?",
    "What planet is closest to the sun?",
    "Translate 'thank you' into Spanish.",
    "What is the largest ocean on Earth?",
    "Name a mammal that can fly.",
    "What gas do plants absorb from the air?",
    "How many legs does a spider have?",
    "What is the opposite of 'cold'?",
    "Suggest a name for a pet goldfish.",
]


def greedy_answers(port, max_tokens):
    """Per question: the greedy answer's text and its tokens' log-probs."""
    answers = []
    for q in QUESTIONS:
        body = chat(port, q, temperature=0, max_tokens=max_tokens, logprobs=True)
        choice = body["choices"][0]
        answers.append({
            "text": choice["message"]["content"],
            "tokens": [e["token"] for e in choice["logprobs"]["content"]],
            "logprobs": [e["logprob"] for e in choice["logprobs"]["content"]],
        })
    return answers


def agreement(answers, reference):
    """How close `answers` are to `reference` (F32's)."""
    identical, prefix_shares, gaps = 0, [], []
    for a, r in zip(answers, reference):
        identical += a["text"] == r["text"]
        shared = 0
        for x, y in zip(a["tokens"], r["tokens"]):
            if x != y:
                break
            shared += 1
        prefix_shares.append(shared / max(len(r["tokens"]), 1))
        gaps += [abs(x - y) for x, y in zip(a["logprobs"][:shared], r["logprobs"][:shared])]
    return {
        "identical_answers": identical / len(reference),
        "shared_prefix": statistics.mean(prefix_shares),
        "mean_abs_logprob_gap": statistics.mean(gaps) if gaps else None,
    }


def serve_speed(port, requests, max_tokens):
    stream_chat(port, "warm up", 4)
    started = time.perf_counter()
    results = [stream_chat(port, SPEED_PROMPTS[i % len(SPEED_PROMPTS)], max_tokens) for i in range(requests)]
    return summarize_load("flywheel serve", 1, results, time.perf_counter() - started)


def bare_speed(model, quantize, requests, max_tokens):
    out = subprocess.check_output(
        [FLYWHEEL, "bench", "engine", "--model", model, "--quantize", quantize, "--concurrency", "1",
         "--requests", str(requests), "--max-tokens", str(max_tokens)], text=True, stderr=subprocess.DEVNULL)
    return last_json_line(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantize", default="none,q8_0,q4k,q4_0")
    parser.add_argument("--max-tokens", type=int, default=48, help="of each greedy answer")
    parser.add_argument("--speed-requests", type=int, default=8)
    parser.add_argument("--speed-tokens", type=int, default=64)
    args = parser.parse_args()
    paths = dict(line.split("\t") for line in subprocess.check_output([FLYWHEEL, "model", "fetch"], text=True).split("\n") if line)
    model = paths["hf"]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for quantize in args.quantize.split(","):
            print(f"== {quantize}", file=sys.stderr)
            log = pathlib.Path(work) / f"{quantize}.log"
            server = Server(FLYWHEEL, model, pathlib.Path(work) / quantize, log, extra_args=["--quantize", quantize])
            (pathlib.Path(work) / quantize).mkdir(exist_ok=True)
            started = time.perf_counter()
            ready = server.start(timeout=600)
            load_s = time.perf_counter() - started
            try:
                answers = greedy_answers(server.port, args.max_tokens)
                serve = serve_speed(server.port, args.speed_requests, args.speed_tokens)
            finally:
                server.stop()
            bare = bare_speed(model, quantize, args.speed_requests, args.speed_tokens)
            rows.append({"quantize": quantize, "load_s": load_s, "ready": ready, "serve": serve, "bare": bare,
                         "answers": answers})
    reference = rows[0]["answers"]
    for row in rows:
        row["quality"] = agreement(row["answers"], reference)
    out = ROOT / "bench" / "quantize"
    out.mkdir(exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"model": model, "max_tokens": args.max_tokens, "speed_tokens": args.speed_tokens, "rows": rows}, indent=1))
    print(f"| quantize | serve tok/s (c=1) | bare engine tok/s | vs F32 serve | identical greedy answers | "
          f"shared prefix | mean abs log-prob gap | load |")
    print("|---|---|---|---|---|---|---|---|")
    f32 = rows[0]["serve"]["output_tokens_per_s"]
    for row in rows:
        q = row["quality"]
        gap = "–" if q["mean_abs_logprob_gap"] is None else f"{q['mean_abs_logprob_gap']:.3f}"
        print(f"| {row['quantize']} | {row['serve']['output_tokens_per_s']:.1f} | "
              f"{row['bare']['output_tokens_per_s']:.1f} | {row['serve']['output_tokens_per_s'] / f32:.2f}× | "
              f"{q['identical_answers']:.0%} | {q['shared_prefix']:.0%} | {gap} | {row['load_s']:.1f} s |")


if __name__ == "__main__":
    main()
