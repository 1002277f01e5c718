#!/usr/bin/env python3
"""Serving benchmark: `flywheel serve` (HTTP, logging to Postgres) against the bare mistral.rs
engine in-process and llama.cpp (llama-cpp-python, built here) on the same GGUF, same prompts,
same machine, at concurrency 1 and 8; plus `flywheel serve` on the F32 import, plain and with
`--quantize` (q4_1, llama.cpp's GGUF type, and q8_0). Prints one table; paste it into
bench/RESULTS.md.

    python3 bench/serve_bench.py [--requests 16] [--max-tokens 64]
    FLYWHEEL_BIN=... python3 bench/serve_bench.py   # a prebuilt binary (the bare engine is
                                                  # `flywheel bench engine`)

Needs: a release build (`cargo build --release`), Postgres on 127.0.0.1:5432, and network access to
PyPI the first time (it makes a venv with llama-cpp-python under ~/.cache/flywheel/bench-venv).
"""

import argparse
import http.client
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("FLYWHEEL_CACHE", pathlib.Path.home() / ".cache" / "flywheel"))
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# Prebuilt binaries may be named instead (e.g. copies, so a rebuild during the run cannot swap them).
FLYWHEEL = os.environ.get("FLYWHEEL_BIN", str(TARGET / "release" / "flywheel"))
PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a short poem about a lighthouse.",
    "List three uses of a paperclip.",
    "What is the difference between a list and a tuple in Python?",
    "Describe a sunrise to someone who has never seen one.",
    "Give me a recipe for a simple tomato soup.",
    "Why do cats purr?",
    "Summarize the plot of Romeo and Juliet.",
]


def fetch_model():
    out = subprocess.check_output([FLYWHEEL, "model", "fetch"], text=True)
    paths = dict(line.split("\t") for line in out.strip().splitlines())
    return paths["gguf"], paths["hf"]


def run_load(one, concurrency, requests):
    """Runs `requests` calls of one(prompt) on `concurrency` threads; one returns (ttft, tokens)."""
    results, lock, counter = [], threading.Lock(), iter(range(requests))

    def worker():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            r = one(PROMPTS[i % len(PROMPTS)])
            with lock:
                results.append(r)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "seconds": elapsed,
        "requests_per_s": requests / elapsed,
        "output_tokens_per_s": sum(r[1] for r in results) / elapsed,
        "ttft_mean_s": statistics.mean(ttfts),
        "ttft_p50_s": ttfts[len(ttfts) // 2],
    }


def flywheel(model, concurrency, requests, max_tokens, label, extra_args=()):
    port = free_port()
    db = f"flywheel_bench_{uuid.uuid4().hex}"
    subprocess.check_call(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {db}"])
    env = dict(os.environ, DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}", RUST_LOG="warn")
    server = subprocess.Popen(
        # --no-auth: the benchmark measures serving, as before API keys existed.
        [FLYWHEEL, "serve", "--model", model, "--port", str(port), "--max-queue", "256", "--no-auth", "--no-worker",
         *extra_args],
        env=env,
    )
    try:
        wait_ready(port)

        def one(prompt):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            body = json.dumps({
                "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True},
            })
            started = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            first, tokens = None, 0
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and first is None:
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
            conn.close()
            return first or 0.0, tokens

        one("warm up")
        result = run_load(one, concurrency, requests)
        result["system"] = label
        return result
    finally:
        server.terminate()
        server.wait()
        subprocess.call(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", f"DROP DATABASE {db}"])


def bare(model, concurrency, requests, max_tokens):
    command = [FLYWHEEL, "bench", "engine", "--model", model, "--concurrency", str(concurrency),
               "--requests", str(requests), "--max-tokens", str(max_tokens)]
    out = subprocess.check_output(command, cwd=ROOT, text=True)
    return json.loads(out.strip().splitlines()[-1])


def llama_cpp(gguf, concurrency, requests, max_tokens):
    venv = CACHE / "bench-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
    check = subprocess.call([str(python), "-c", "import llama_cpp"], stderr=subprocess.DEVNULL)
    if check != 0:
        # Built from source here, for this CPU (GGML_NATIVE), like llama.cpp's own default.
        subprocess.check_call([str(python), "-m", "pip", "install", "-q", "llama-cpp-python==0.3.36"])
    script = f"""
import json, sys, threading, time
sys.path.insert(0, {str(ROOT / 'bench')!r})
from serve_bench import run_load
from llama_cpp import Llama
llm = Llama(model_path={gguf!r}, n_ctx=2048, n_threads={os.cpu_count()}, verbose=False)
lock = threading.Lock()  # a Llama object serves one request at a time
def one(prompt):
    started = time.perf_counter(); first = None; tokens = 0  # queue wait counts, as it does for a server
    with lock:
        for chunk in llm.create_chat_completion(messages=[{{"role": "user", "content": prompt}}],
                max_tokens={max_tokens}, temperature=0.7, stream=True):
            if chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter() - started
                tokens += 1
        return first or 0.0, tokens
one("warm up")
r = run_load(one, {concurrency}, {requests})
r["system"] = "llama.cpp (llama-cpp-python, in-process)"
print(json.dumps(r))
"""
    out = subprocess.check_output([str(python), "-c", script], text=True)
    return json.loads(out.strip().splitlines()[-1])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port):
    for _ in range(300):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("flywheel serve did not become ready")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--skip-llama-cpp", action="store_true")
    parser.add_argument("--quantize", default="q4_1,q8_0",
                        help="`serve --quantize` rows on the F32 import (comma-separated; '' for none)")
    args = parser.parse_args()
    gguf, hf = fetch_model()
    rows = []

    def add(row):
        # Each row as it is measured, so a system that fails later costs none of the others.
        rows.append(row)
        print(f"{row['system']} | {row['model']} | c={row['concurrency']} | {row['output_tokens_per_s']:.1f} tok/s",
              file=sys.stderr, flush=True)

    for c in (1, 8):
        add(bare(gguf, c, args.requests, args.max_tokens) | {"model": "GGUF Q4_1"})
        add(flywheel(gguf, c, args.requests, args.max_tokens, "flywheel serve (HTTP + Postgres)") | {"model": "GGUF Q4_1"})
        add(flywheel(hf, c, args.requests, args.max_tokens, "flywheel serve (HTTP + Postgres)") | {"model": "F32 import"})
        for q in filter(None, args.quantize.split(",")):
            add(flywheel(hf, c, args.requests, args.max_tokens, "flywheel serve (HTTP + Postgres)",
                         ["--quantize", q]) | {"model": f"F32 import, --quantize {q}"})
        if not args.skip_llama_cpp:
            add(llama_cpp(gguf, c, args.requests, args.max_tokens) | {"model": "GGUF Q4_1"})
    print(f"\n{args.requests} requests x {args.max_tokens} max tokens, temperature 0.7, {os.cpu_count()} cores\n")
    print("| system | model | conc. | req/s | out tok/s | TTFT mean | TTFT p50 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['model']} | {r['concurrency']} | {r['requests_per_s']:.2f} | "
              f"{r['output_tokens_per_s']:.1f} | {r['ttft_mean_s']*1000:.0f} ms | {r['ttft_p50_s']*1000:.0f} ms |")
    for c in (1, 8):
        b = next(r for r in rows if r["concurrency"] == c and r["system"].startswith("mistral.rs"))
        f = next(r for r in rows if r["concurrency"] == c and r["system"].startswith("flywheel") and r["model"] == "GGUF Q4_1")
        print(f"concurrency {c}: flywheel/bare throughput = {f['output_tokens_per_s'] / b['output_tokens_per_s']:.3f}")
        l = next((r for r in rows if r["concurrency"] == c and r["system"].startswith("llama.cpp")), None)
        if l:
            for r in rows:
                if r["concurrency"] == c and r["system"].startswith("flywheel"):
                    print(f"  flywheel ({r['model']}) / llama.cpp (GGUF Q4_1) = "
                          f"{r['output_tokens_per_s'] / l['output_tokens_per_s']:.3f}")


if __name__ == "__main__":
    main()
