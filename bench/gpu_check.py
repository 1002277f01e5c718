#!/usr/bin/env python3
"""One command that proves a Flywheel build on one machine: the CUDA build on a lent GPU (in under
8 minutes), or the same logic on CPU with a tiny model (about 2 minutes, for CI).

Each step is guarded: a failure is recorded with its error and the next step runs.
 1. Models: random-weight Llamas from `flywheel model tiny --shape` (CUDA: smollm2-135m for
    serving, llama-1b for the DPO step; CPU: tiny for everything).
 2. Correctness (`flywheel serve`, temperature 0): 8 prompts with n=4 sent at once must each give
    the text the prompt gives alone (mistral.rs's CPU kernel mixes sequences that share a decode
    step; this shows whether the device has such a twin), and a seeded request (temperature 0.8,
    seed 7, n=2) must give the same texts in that batch and alone.
 3. Throughput: output tokens/s and time to first token at several concurrencies, through
    `flywheel serve` (streamed chat completions) and `flywheel bench engine` (bare mistral.rs,
    in-process), with the ratio flywheel/bare. One model on the device at a time.
 4. DPO step: `flywheel bench dpo-step` (candle; f32 and, on CUDA, bf16; with and without
    `--checkpoint`) against PyTorch + PEFT (bench/dpo_step.py) where torch, peft and transformers
    import, on the same data: step time, memory, ratio candle/PyTorch.
 5. Hot-swap: a random PEFT LoRA adapter (written here) is registered and activated while requests
    run; the time from sending the activation to the first answer from the new version, and
    whether every request sent meanwhile succeeded.
Writes OUT/gpu_check.json (everything), OUT/gpu_check.md (tables for bench/RESULTS.md) and up to
four logs, all directly in OUT: --out, else $OUT, else bench/gpu_check-out.

    bench/gpu_check.sh [--device cuda|cpu] [--out DIR] [--bin PATH]     # the usual entry point
    python3 bench/gpu_check.py --device cpu --bin target/release/flywheel
    python3 bench/gpu_check.py --self-test                              # file writers only

Standard library only. Exit status: 0 all passed, 1 a correctness check failed, 2 a step could
not run (or the time budget ran out).
"""

import argparse
import array
import concurrent.futures
import dataclasses
import datetime
import hashlib
import http.client
import json
import math
import os
import pathlib
import platform
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from dpo_step import write_pairs
from serve_bench import PROMPTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LOG_NAMES = ("models.log", "server.log", "bench-engine.log", "dpo.log")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one device runs."""

    serve_shape: str
    dpo_shape: str
    check_tokens: int
    bench_tokens: int
    concurrencies: tuple
    dpo_dtypes: tuple
    dpo_steps: int
    budget_s: float


PLANS = {
    "cuda": Plan("smollm2-135m", "llama-1b", 32, 128, (1, 8, 32), ("f32", "bf16"), 3, 440),
    "cpu": Plan("tiny", "tiny", 12, 16, (1, 8), ("f32",), 2, 240),
}


class Skip(Exception):
    """A step that does not apply here (recorded as skipped, not as a failure)."""


class HttpError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:500]}")
        self.status = status


# ---------------------------------------------------------------- safetensors, stdlib only

def write_safetensors(path, tensors):
    """Writes {name: (shape, array('f'))} as F32 safetensors: an 8-byte little-endian header
    length, the JSON header (padded with spaces to 8 bytes), then the raw little-endian data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in sorted(tensors):
        shape, values = tensors[name]
        if math.prod(shape) != len(values):
            raise ValueError(f"{name}: shape {shape} holds {math.prod(shape)} values, given {len(values)}")
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + 4 * len(values)]}
        offset += 4 * len(values)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name in sorted(tensors):
            values = array.array("f", tensors[name][1])
            if sys.byteorder == "big":
                values.byteswap()
            f.write(values.tobytes())


def read_safetensors_header(path):
    """The header of a safetensors file (tensor name -> dtype, shape, data_offsets) and where its
    data starts."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


def read_tensor(path, name, limit=None):
    """Up to `limit` values of one F32, BF16 or F16 tensor, as Python floats."""
    header, start = read_safetensors_header(path)
    info = header[name]
    begin, end = info["data_offsets"]
    width = {"F32": 4, "BF16": 2, "F16": 2}[info["dtype"]]
    count = (end - begin) // width if limit is None else min(limit, (end - begin) // width)
    with open(path, "rb") as f:
        f.seek(start + begin)
        raw = f.read(count * width)
    if info["dtype"] == "F32":
        return list(struct.unpack(f"<{count}f", raw))
    if info["dtype"] == "F16":
        return list(struct.unpack(f"<{count}e", raw))
    halves = struct.unpack(f"<{count}H", raw)
    return list(struct.unpack(f"<{count}f", struct.pack(f"<{count}I", *(h << 16 for h in halves))))


def model_tensors(model_dir):
    """Every tensor of a model directory: name -> (file, header entry)."""
    found = {}
    for file in sorted(pathlib.Path(model_dir).glob("*.safetensors")):
        header, _ = read_safetensors_header(file)
        for name, info in header.items():
            found[name] = (file, info)
    return found


# ---------------------------------------------------------------- a random LoRA adapter

def lora_layers(model_dir):
    """The base model's linear layers a q/k/v/o LoRA changes: module path -> (out, in)."""
    layers = {}
    for name, (_, info) in model_tensors(model_dir).items():
        module = name[: -len(".weight")] if name.endswith(".weight") else None
        if module and len(info["shape"]) == 2 and module.rsplit(".", 1)[-1] in LORA_TARGETS:
            layers[module] = tuple(info["shape"])
    return layers


def weight_rms(model_dir, module):
    file, _ = model_tensors(model_dir)[module + ".weight"]
    sample = read_tensor(file, module + ".weight", limit=65536)
    return math.sqrt(sum(v * v for v in sample) / len(sample))


def write_lora_adapter(model_dir, out_dir, rank=8, alpha=16, seed=0):
    """Writes a PEFT LoRA (adapter_config.json + adapter_model.safetensors) on q/k/v/o of every
    layer, with random A and B scaled so that the update (alpha / r) B A is about as large as the
    base weights: large enough to change what the model says."""
    layers = lora_layers(model_dir)
    if not layers:
        raise RuntimeError(f"{model_dir} has no {'/'.join(LORA_TARGETS)} layers")
    target = weight_rms(model_dir, min(layers))
    # Entries of B A are sums of `rank` products of independent factors of spread s: s^2 sqrt(r).
    spread = math.sqrt(target / ((alpha / rank) * math.sqrt(rank)))
    bound = spread * math.sqrt(3)  # a uniform on [-b, b] has standard deviation b / sqrt(3)
    rng = random.Random(seed)

    def uniform(n):
        return array.array("f", (rng.uniform(-bound, bound) for _ in range(n)))

    tensors = {}
    for module, (out, inp) in sorted(layers.items()):
        tensors[f"base_model.model.{module}.lora_A.weight"] = ((rank, inp), uniform(rank * inp))
        tensors[f"base_model.model.{module}.lora_B.weight"] = ((out, rank), uniform(out * rank))
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(out_dir / "adapter_model.safetensors", tensors)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir),
        "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": list(LORA_TARGETS),
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "inference_mode": True,
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return {"layers": len(layers), "rank": rank, "alpha": alpha, "update_rms_target": target}


# ---------------------------------------------------------------- processes and HTTP

def run_command(cmd, log, timeout, env=None):
    """Runs cmd, appending the command line and its stderr to `log`; returns stdout. Raises with
    the end of this command's stderr on a non-zero exit or a timeout."""
    cmd = list(map(str, cmd))
    with tempfile.TemporaryFile("w+") as err:
        try:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout, env=env)
            failure = None if done.returncode == 0 else f"exit {done.returncode}"
        except subprocess.TimeoutExpired:
            done, failure = None, f"timed out after {timeout:.0f} s"
        err.seek(0)
        stderr = err.read()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n{stderr}")
    if failure:
        last = stderr.strip().splitlines()[-1] if stderr.strip() else "(no stderr)"
        raise RuntimeError(f"{failure}: {last}\n$ {' '.join(cmd)}\n{last_lines(stderr)}")
    return done.stdout


def last_lines(text, lines=15):
    return "\n".join(text.splitlines()[-lines:])


def tail(path, lines=15):
    try:
        return last_lines(pathlib.Path(path).read_text(errors="replace"), lines)
    except OSError:
        return ""


def last_json_line(stdout):
    lines = [line for line in stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON line in the output: {stdout[-500:]!r}")
    return json.loads(lines[-1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_json(port, method, path, body=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body)
        conn.request(method, path, payload, {"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, data
    finally:
        conn.close()


def chat(port, prompt, **params):
    """One non-streamed chat completion; raises HttpError unless 200."""
    body = {"messages": [{"role": "user", "content": prompt}], **params}
    status, data = request_json(port, "POST", "/v1/chat/completions", body)
    if status != 200:
        raise HttpError(status, data)
    return data


def choices(completion):
    return sorted(completion["choices"], key=lambda c: c["index"])


def texts(completion):
    return [c["message"]["content"] for c in choices(completion)]


def stream_chat(port, prompt, max_tokens):
    """One streamed chat completion at temperature 0.7; returns (time to first token, tokens)."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0.7,
            "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise HttpError(response.status, response.read().decode(errors="replace"))
        first, tokens = None, None
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
        if tokens is None:
            raise RuntimeError("the stream ended without a usage chunk")
        return first or 0.0, tokens
    finally:
        conn.close()


class Server:
    """`flywheel serve` on a model, with its own SQLite store and adapter root; no auth, no
    trainer worker, no arena, adapters promoted only by hand."""

    def __init__(self, binary, model, work, log, decode_slots=None, extra_args=()):
        self.port = free_port()
        self.adapter_root = pathlib.Path(work) / "adapters"
        self.adapter_root.mkdir(parents=True, exist_ok=True)
        self.command = [
            binary, "serve", "--model", model, "--port", self.port, "--no-auth", "--no-worker", "--no-arena",
            "--promotion", "manual", "--adapter-root", self.adapter_root, "--max-queue", 256,
        ]
        if decode_slots:
            self.command += ["--decode-slots", decode_slots]
        self.command += list(extra_args)
        self.env = dict(os.environ, DATABASE_URL=f"sqlite://{work}/flywheel.db")
        self.env.setdefault("RUST_LOG", "warn,flywheel_server=info")
        self.log = log
        self.process = None

    def start(self, timeout):
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(map(str, self.command))}\n")
            log.flush()
            self.process = subprocess.Popen(list(map(str, self.command)), env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT)
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                recent = tail(self.log)
                raise RuntimeError(f"flywheel serve exited with {self.process.returncode}: "
                                   f"{(recent.splitlines() or [''])[-1]}\n{recent}")
            try:
                if request_json(self.port, "GET", "/ready", timeout=2)[0] == 200:
                    return {"port": self.port, "ready_s": round(time.perf_counter() - started, 2),
                            "command": " ".join(map(str, self.command[1:]))}
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"not ready after {timeout:.0f} s:\n{tail(self.log)}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---------------------------------------------------------------- the measurements

def make_model(binary, shape, out_dir, log, timeout):
    started = time.perf_counter()
    run_command([binary, "model", "tiny", out_dir, "--shape", shape, "--seed", 0], log, timeout)
    config = json.loads((pathlib.Path(out_dir) / "config.json").read_text())
    size = sum(f.stat().st_size for f in pathlib.Path(out_dir).glob("*.safetensors"))
    return {"shape": shape, "dir": str(out_dir), "seconds": round(time.perf_counter() - started, 1),
            "weights_mib": round(size / MIB), "vocab_size": config.get("vocab_size"),
            "layers": config.get("num_hidden_layers"), "hidden_size": config.get("hidden_size")}


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


# A batched greedy answer that leaves the solo one where the solo's top two tokens were this close
# (nats), for the solo's second token, is a rounding near-tie: a GPU's kernels need not sum in the
# same order at every batch size, and mistral.rs 0.8.1's cuBLASLt matmuls compute f32 as TF32
# (`CUBLAS_COMPUTE_32F_FAST_TF32`: 10-bit mantissas, ~1e-3 relative error). A wider margin means the batch changed the logits, e.g. by mixing
# sequences as mistral.rs 0.8.1's CPU decode does. Random-weight models have flat distributions, so
# such near-ties are common in this check.
NEAR_TIE_NATS = 0.1


def tokens_of(choice):
    """[(token, logprob, top_logprobs)] of one choice with `logprobs: true`."""
    content = (choice.get("logprobs") or {}).get("content") or []
    return [(t["token"], t["logprob"], t.get("top_logprobs") or []) for t in content]


def divergence(solo_choice, batched_choice):
    """Where a batched answer first takes another token than the solo one, and how close the solo's
    top two tokens were there."""
    solo, batched = tokens_of(solo_choice), tokens_of(batched_choice)
    at = next((i for i, (a, b) in enumerate(zip(solo, batched)) if a[0] != b[0]), None)
    if at is None:
        return {"token_index": None, "solo_top2_gap": None, "near_tie": False}
    top = sorted((t["logprob"] for t in solo[at][2]), reverse=True)
    gap = top[0] - top[1] if len(top) >= 2 else None
    alternatives = {t["token"] for t in solo[at][2]}
    near_tie = gap is not None and gap < NEAR_TIE_NATS and batched[at][0] in alternatives
    return {"token_index": at, "solo_token": solo[at][0], "batched_token": batched[at][0],
            "solo_top2_gap": gap, "near_tie": near_tie}


def check_correctness(port, max_tokens):
    """Batched greedy samples against solo ones, and one seeded request in the batch and alone.
    A batched answer that differs passes only at a near-tie (see NEAR_TIE_NATS)."""
    greedy = {"temperature": 0, "max_tokens": max_tokens, "logprobs": True, "top_logprobs": 2}
    seeded = {"temperature": 0.8, "seed": 7, "n": 2, "max_tokens": max_tokens}
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS) + 1) as pool:
        batch = [pool.submit(chat, port, p, n=4, **greedy) for p in PROMPTS]
        seeded_future = pool.submit(chat, port, PROMPTS[0], **seeded)
        batched = [choices(f.result()) for f in batch]
        seeded_batched = texts(seeded_future.result())
    solo = [choices(chat(port, p, n=1, **greedy))[0] for p in PROMPTS]
    seeded_alone = texts(chat(port, PROMPTS[0], **seeded))
    text = lambda choice: choice["message"]["content"]  # noqa: E731
    mismatches = [
        {"prompt": p, "choice": i, "solo": text(s), "batched": text(b),
         "first_difference_at_char": first_difference(text(s), text(b)), **divergence(s, b)}
        for p, s, answers in zip(PROMPTS, solo, batched) for i, b in enumerate(answers) if text(b) != text(s)
    ]
    wide = [m for m in mismatches if not m["near_tie"]]
    seeds_equal = seeded_batched == seeded_alone
    return {
        "passed": not wide and seeds_equal,
        "batched_vs_solo": {
            "passed": not wide, "prompts": len(PROMPTS), "n": 4, "max_tokens": max_tokens,
            "compared": sum(map(len, batched)), "mismatches": len(mismatches), "near_ties": len(mismatches) - len(wide),
            "near_tie_nats": NEAR_TIE_NATS,
            "examples": (wide + [m for m in mismatches if m["near_tie"]])[:3],
            "solo_mean_chars": round(statistics.mean(len(text(c)) for c in solo), 1),
            "distinct_solo_texts": len({text(c) for c in solo}), "solo_texts": [text(c) for c in solo],
        },
        "seeds": {"passed": seeds_equal, "request": seeded, "in_batch": seeded_batched, "alone": seeded_alone},
    }


def summarize_load(system, concurrency, results, seconds):
    ttfts = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "system": system, "concurrency": concurrency, "requests": len(results), "seconds": round(seconds, 3),
        "output_tokens": tokens, "requests_per_s": len(results) / seconds, "output_tokens_per_s": tokens / seconds,
        "ttft_mean_s": statistics.mean(ttfts), "ttft_p50_s": ttfts[len(ttfts) // 2],
    }


def requests_for(concurrency):
    return max(2 * concurrency, 8)


def serve_throughput(port, concurrencies, max_tokens):
    """Streamed chat completions (temperature 0.7, the 8 benchmark prompts in turn) at each
    concurrency; a failed concurrency is recorded and the next one runs."""
    stream_chat(port, "warm up", 4)
    rows, errors = [], []
    for c in concurrencies:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests_for(c))]
        try:
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(c) as pool:
                results = list(pool.map(lambda p: stream_chat(port, p, max_tokens), prompts))
            rows.append(summarize_load("flywheel serve", c, results, time.perf_counter() - started))
        except Exception as e:  # noqa: BLE001 - recorded, and the next concurrency runs
            errors.append({"concurrency": c, "error": describe(e)})
    return {"max_tokens": max_tokens, "temperature": 0.7, "rows": rows, "errors": errors}


def bare_throughput(binary, model, concurrencies, max_tokens, log, remaining):
    rows, errors = [], []
    for c in concurrencies:
        try:
            out = run_command([binary, "bench", "engine", "--model", model, "--concurrency", c,
                               "--requests", requests_for(c), "--max-tokens", max_tokens], log, remaining())
            rows.append(last_json_line(out))
        except Exception as e:  # noqa: BLE001 - recorded, and the next concurrency runs
            errors.append({"concurrency": c, "error": describe(e)})
    return {"max_tokens": max_tokens, "temperature": 0.7, "rows": rows, "errors": errors}


class Traffic:
    """Requests sent back to back on a few threads until stopped; remembers each outcome."""

    def __init__(self, port, threads, max_tokens):
        self.port, self.max_tokens = port, max_tokens
        self.stopping = threading.Event()
        self.outcomes, self.lock = [], threading.Lock()
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(threads)]

    def loop(self, i):
        while not self.stopping.is_set():
            try:
                version = chat(self.port, PROMPTS[i % len(PROMPTS)], temperature=0, max_tokens=self.max_tokens)["adapter"]
                outcome = {"ok": True, "adapter": version}
            except Exception as e:  # noqa: BLE001 - a failed request is what this counts
                outcome = {"ok": False, "error": describe(e)}
            with self.lock:
                self.outcomes.append(outcome)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        for t in self.threads:
            t.join()

    def summary(self):
        failures = [o["error"] for o in self.outcomes if not o["ok"]]
        versions = {}
        for o in self.outcomes:
            if o["ok"]:
                versions[str(o["adapter"])] = versions.get(str(o["adapter"]), 0) + 1
        return {"requests": len(self.outcomes), "failed": len(failures), "errors": failures[:3],
                "answers_by_version": versions}


def wait_for_version(port, version, started, timeout, give_up):
    """Sends a one-token request in a loop until one is answered by `version` (or `give_up` is
    set); returns the seconds from `started` to that answer (None if none came), the requests sent
    and how many of them failed."""
    sent, failed = 0, 0
    while time.perf_counter() - started < timeout and not give_up.is_set():
        sent += 1
        try:
            if chat(port, "Hi", temperature=0, max_tokens=1)["adapter"] == version:
                return time.perf_counter() - started, sent, failed
        except (OSError, HttpError):
            failed += 1
            time.sleep(0.05)
    return None, sent, failed


def hot_swap(server, model, max_tokens, timeout):
    """Registers a random LoRA, activates it under load, and times the switch."""
    port = server.port
    adapter = write_lora_adapter(model, server.adapter_root / "gpu-check-lora", seed=1)
    before = chat(port, PROMPTS[0], temperature=0, max_tokens=max_tokens)
    status, registered = request_json(port, "POST", "/v1/adapters",
                                      {"path": "gpu-check-lora", "note": "bench/gpu_check.py hot-swap"})
    if status != 201:
        raise HttpError(status, registered)
    version = registered["version"]
    with Traffic(port, threads=4, max_tokens=max_tokens) as traffic:
        time.sleep(0.5)  # requests in flight on the base model when the swap starts
        give_up = threading.Event()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.perf_counter()
            poll = pool.submit(wait_for_version, port, version, started, timeout, give_up)
            swapped = False
            try:
                status, activated = request_json(port, "POST", f"/v1/adapters/{version}/activate", timeout=timeout)
                swapped = status == 200
            finally:
                activate_s = time.perf_counter() - started
                if not swapped:
                    give_up.set()  # no new version is coming: stop polling for it
            first_answer_s, polls, poll_failures = poll.result()
        time.sleep(0.5)  # and some on the new version after it
    after = chat(port, PROMPTS[0], temperature=0, max_tokens=max_tokens)
    load = traffic.summary()
    return {
        "passed": swapped and first_answer_s is not None and load["failed"] == 0 and poll_failures == 0
        and before["adapter"] == 0 and after["adapter"] == version,
        "adapter": adapter, "version": version, "activate_status": status,
        "activate_response": {"status": activated.get("status")} if swapped else activated,
        "activate_call_s": round(activate_s, 3),
        "first_answer_from_new_version_s": None if first_answer_s is None else round(first_answer_s, 3),
        "polls": polls, "poll_failures": poll_failures, "during_swap": load,
        "answer_before": before["choices"][0]["message"]["content"],
        "answer_after": after["choices"][0]["message"]["content"],
        "answer_changed": texts(before) != texts(after),
    }


def make_pairs(model, data):
    """The DPO data both implementations train on: bench/dpo_step.py make-data's defaults."""
    write_pairs(model, data)
    pairs = json.loads(pathlib.Path(data).read_text())["pairs"]
    return {"file": str(data), "pairs": len(pairs), "prompt_tokens": len(pairs[0]["prompt"]),
            "response_tokens": len(pairs[0]["chosen"])}


def candle_dpo_step(binary, model, data, steps, device, dtype, checkpoint, log, timeout):
    cmd = [binary, "bench", "dpo-step", "--model", model, "--data", data, "--steps", steps,
           "--device", device, "--dtype", dtype] + (["--checkpoint"] if checkpoint else [])
    return last_json_line(run_command(cmd, log, timeout))


def pytorch_dpo_step(torch_info, model, data, steps, device, dtype, log, timeout):
    if not isinstance(torch_info, dict):
        raise Skip("torch not installed" if "No module" in str(torch_info) else f"torch unusable: {torch_info}")
    if device == "cuda" and not torch_info.get("cuda"):
        raise Skip("torch has no CUDA here")
    cmd = [sys.executable, ROOT / "bench" / "dpo_step.py", "run", "--model", model, "--data", data,
           "--steps", steps, "--device", device, "--dtype", dtype]
    return last_json_line(run_command(cmd, log, timeout))


def torch_versions():
    """torch, transformers and peft versions and whether torch sees CUDA, or why they do not import."""
    script = ("import json, torch, transformers, peft; print(json.dumps({'torch': torch.__version__, "
              "'transformers': transformers.__version__, 'peft': peft.__version__, "
              "'cuda': torch.cuda.is_available()}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["unknown error"])[-1]
    return json.loads(done.stdout)


def environment(binary, device):
    info = {
        "device": device, "binary": str(binary), "binary_sha256": sha256(binary),
        "python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    info["flywheel_version"] = version.stdout.strip() or version.stderr.strip()
    if shutil.which("nvidia-smi"):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=60)
        info["gpu"] = smi.stdout.strip() or smi.stderr.strip()
    info["torch"] = torch_versions()
    return info


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(error):
    return f"{type(error).__name__}: {error}"


# ---------------------------------------------------------------- the run

class Check:
    """The steps of one run, each timed and guarded, and the report they fill."""

    def __init__(self, args, plan):
        self.args, self.plan = args, plan
        self.out = pathlib.Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in LOG_NAMES + ("gpu_check.json", "gpu_check.md"):
            (self.out / name).unlink(missing_ok=True)
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="gpu_check-"))
        self.started = time.perf_counter()
        self.report = {"device": args.device, "plan": dataclasses.asdict(plan), "steps": {}}

    def elapsed(self):
        return time.perf_counter() - self.started

    def remaining(self):
        """Seconds left in the budget, for a subprocess's timeout (at least 5)."""
        return max(5.0, self.plan.budget_s - self.elapsed())

    def log(self, name):
        return self.out / name

    def step(self, name, fn, *args, **kwargs):
        """Runs fn, recording its result (or error) under `name`; returns the result or None."""
        print(f"== {name} (at {self.elapsed():.0f} s)", flush=True)
        record = {"status": "ok"}
        result = None
        started = time.perf_counter()
        if self.elapsed() > self.plan.budget_s:
            record = {"status": "error", "error": f"skipped: over the time budget of {self.plan.budget_s:.0f} s"}
        else:
            try:
                result = fn(*args, **kwargs)
                record["result"] = result
                if isinstance(result, dict) and result.get("passed") is False:
                    record["status"] = "failed"
                elif isinstance(result, dict) and result.get("errors"):
                    record["status"] = "error"
            except Skip as e:
                record = {"status": "skipped", "reason": str(e)}
            except Exception as e:  # noqa: BLE001 - recorded; the next step runs
                record = {"status": "error", "error": describe(e), "traceback": traceback.format_exc()[-2000:]}
        record["seconds"] = round(time.perf_counter() - started, 2)
        self.report["steps"][name] = record
        print(f"   {record['status']} in {record['seconds']:.1f} s{step_note(record)}", flush=True)
        self.save()
        return result

    def save(self):
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(markdown(self.report))

    def exit_status(self):
        statuses = [s["status"] for s in self.report["steps"].values()]
        return 1 if "failed" in statuses else 2 if "error" in statuses else 0

    def run(self):
        args, plan = self.args, self.plan
        env = self.step("environment", environment, args.bin, args.device)
        torch_info = (env or {}).get("torch", "unknown")
        serve_model = None if args.dpo_only else self.step(
            f"model_{plan.serve_shape}", make_model, args.bin, plan.serve_shape, self.work / plan.serve_shape,
            self.log("models.log"), self.remaining())
        if serve_model:
            self.serving(serve_model["dir"])
        if args.correctness_only:
            return
        dpo_model = serve_model if serve_model and plan.dpo_shape == plan.serve_shape else self.step(
            f"model_{plan.dpo_shape}", make_model, args.bin, plan.dpo_shape, self.work / plan.dpo_shape,
            self.log("models.log"), self.remaining())
        if dpo_model:
            self.dpo(dpo_model["dir"], torch_info)

    def serving(self, model):
        plan = self.plan
        server = Server(self.args.bin, model, self.work, self.log("server.log"), self.args.decode_slots)
        try:
            if self.step("server_start", server.start, min(300.0, self.remaining())):
                self.report["decode_slots"] = self.args.decode_slots or "server default"
                self.step("correctness", check_correctness, server.port, plan.check_tokens)
                if self.args.correctness_only:
                    return
                self.step("throughput_flywheel", serve_throughput, server.port, plan.concurrencies, plan.bench_tokens)
                self.step("hot_swap", hot_swap, server, model, plan.check_tokens, min(180.0, self.remaining()))
        finally:
            server.stop()
        self.step("throughput_bare", bare_throughput, self.args.bin, model, plan.concurrencies, plan.bench_tokens,
                  self.log("bench-engine.log"), self.remaining)

    def dpo(self, model, torch_info):
        plan, device = self.plan, self.args.device
        data = self.work / "pairs.json"
        if not self.step("dpo_data", make_pairs, model, data):
            return
        log = self.log("dpo.log")
        for dtype in plan.dpo_dtypes:
            for checkpoint in (False, True):
                name = f"dpo_candle_{dtype}" + ("_checkpoint" if checkpoint else "")
                self.step(name, candle_dpo_step, self.args.bin, model, data, plan.dpo_steps, device, dtype,
                          checkpoint, log, self.remaining())
            self.step(f"dpo_pytorch_{dtype}", pytorch_dpo_step, torch_info, model, data, plan.dpo_steps, device,
                      dtype, log, self.remaining())

    def finish(self):
        for name in LOG_NAMES:
            cap_log(self.log(name))
        if self.args.keep_work:
            self.report["work_dir"] = str(self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        self.report["exit_status"] = self.exit_status()
        self.save()
        print(markdown(self.report))
        print(f"wrote {self.out / 'gpu_check.json'} and {self.out / 'gpu_check.md'} in {self.elapsed():.0f} s")
        return self.report["exit_status"]


def step_note(record):
    """What to print after a step's status: its error, why it was skipped, or its inner errors."""
    if record.get("error") or record.get("reason"):
        return ": " + (record.get("error") or record.get("reason"))
    errors = (record.get("result") or {}).get("errors") if isinstance(record.get("result"), dict) else None
    return "".join(f"\n   at concurrency {e['concurrency']}: {e['error']}" for e in errors or [])


def cap_log(path, limit=4 * MIB, head=MIB):
    """Keeps a log's first `head` bytes and its end, so it stays under `limit`."""
    if not path.exists() or path.stat().st_size <= limit:
        return
    data = path.read_bytes()
    path.write_bytes(data[:head] + b"\n[... cut by gpu_check.py ...]\n" + data[-(limit - head):])


# ---------------------------------------------------------------- the report in markdown

def steps_of(report, prefix):
    return {k: v for k, v in report["steps"].items() if k.startswith(prefix)}


def result_of(report, name):
    return report["steps"].get(name, {}).get("result") or {}


def one_line(text, limit=160):
    """The first line of an error, short enough for a table cell."""
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return (line[: limit - 1] + "…" if len(line) > limit else line).replace("|", "\\|")


def fmt(value, spec=".2f", unit=""):
    return "–" if value is None else f"{value:{spec}}{unit}"


def markdown(report):
    lines = [f"## GPU check: {report['device']}", ""]
    lines += md_environment(report) + md_correctness(report) + md_throughput(report) + md_dpo(report)
    lines += md_hot_swap(report) + md_problems(report)
    return "\n".join(lines) + "\n"


def md_environment(report):
    env = result_of(report, "environment")
    torch_info = env.get("torch")
    torch_text = (f"torch {torch_info['torch']}, transformers {torch_info['transformers']}, peft {torch_info['peft']}"
                  if isinstance(torch_info, dict) else f"no PyTorch ({torch_info})")
    models = [r.get("result") for k, r in steps_of(report, "model_").items() if r.get("result")]
    return [
        f"- binary: `{env.get('binary')}` ({env.get('flywheel_version')}, sha256 {str(env.get('binary_sha256'))[:12]})",
        f"- machine: {env.get('gpu') or 'no GPU'}; {env.get('cpus')} CPUs; {env.get('platform')}",
        f"- Python {env.get('python')}; {torch_text}",
        "- models (random weights, `flywheel model tiny --shape`): " + ", ".join(
            f"{m['shape']} ({m['layers']} layers, hidden {m['hidden_size']}, vocab {m['vocab_size']}, "
            f"{m['weights_mib']} MiB, written in {m['seconds']} s)" for m in models),
        f"- decode slots: {report.get('decode_slots', '–')}; started {env.get('started_at')}, "
        f"took {report.get('elapsed_s')} s",
        "",
    ]


def md_correctness(report):
    step = report["steps"].get("correctness")
    if not step:
        return []
    lines = ["| check | result | detail |", "|---|---|---|"]
    if step["status"] == "error":
        return lines + [f"| correctness | error | {one_line(step['error'])} |", ""]
    batched, seeds = step["result"]["batched_vs_solo"], step["result"]["seeds"]
    lines.append(f"| 8 prompts × n=4 at once vs each alone (temperature 0, {batched['max_tokens']} tokens) | "
                 f"{'pass' if batched['passed'] else 'FAIL'} | {batched['compared'] - batched['mismatches']}/"
                 f"{batched['compared']} equal"
                 + (f", {batched['near_ties']} left at a near-tie (top-2 gap < {batched['near_tie_nats']} nats)"
                    if batched.get("near_ties") else "")
                 + f"; {batched['distinct_solo_texts']} distinct solo texts, mean {batched['solo_mean_chars']} chars |")
    lines.append(f"| seed 7, temperature 0.8, n=2: in the batch vs alone | {'pass' if seeds['passed'] else 'FAIL'} | "
                 f"{'identical' if seeds['passed'] else 'different'} |")
    for m in batched["examples"]:
        gap = m.get("solo_top2_gap")
        where = (f"token {m['token_index']}: solo {m.get('solo_token')!r}, batched {m.get('batched_token')!r}, "
                 f"solo top-2 gap {fmt(gap, '.4f', ' nats')}" if m.get("token_index") is not None
                 else f"at char {m['first_difference_at_char']}")
        lines.append(f"| mismatch: {m['prompt']!r} choice {m['choice']} | "
                     f"{'near-tie' if m.get('near_tie') else 'WIDE'} | {where} |")
    return lines + [""]


def md_throughput(report):
    serve, bare = result_of(report, "throughput_flywheel"), result_of(report, "throughput_bare")
    if not serve and not bare:
        return []
    by_c = {}
    for row in serve.get("rows", []):
        by_c.setdefault(row["concurrency"], {})["serve"] = row
    for row in bare.get("rows", []):
        by_c.setdefault(row["concurrency"], {})["bare"] = row
    tokens = serve.get("max_tokens") or bare.get("max_tokens")
    lines = [f"Throughput: streamed chat completions, {tokens} max tokens, temperature 0.7, "
             "requests = max(2 × concurrency, 8).", "",
             "| concurrency | flywheel serve tok/s | bare engine tok/s | flywheel/bare | TTFT p50 flywheel | TTFT p50 bare |",
             "|---|---|---|---|---|---|"]
    for c in sorted(by_c):
        s, b = by_c[c].get("serve", {}), by_c[c].get("bare", {})
        ratio = (s["output_tokens_per_s"] / b["output_tokens_per_s"]
                 if s.get("output_tokens_per_s") and b.get("output_tokens_per_s") else None)
        lines.append(f"| {c} | {fmt(s.get('output_tokens_per_s'), '.1f')} | {fmt(b.get('output_tokens_per_s'), '.1f')} | "
                     f"{fmt(ratio, '.3f')} | {fmt(ms(s.get('ttft_p50_s')), '.0f', ' ms')} | "
                     f"{fmt(ms(b.get('ttft_p50_s')), '.0f', ' ms')} |")
    return lines + [""]


def ms(seconds):
    return None if seconds is None else seconds * 1000


def md_dpo(report):
    runs = {k: v for k, v in steps_of(report, "dpo_").items() if k != "dpo_data"}
    if not runs:
        return []
    lines = ["DPO step: 4 pairs of 128 + 128 random tokens, LoRA r = 16 on q/k/v/o, median after one warm-up step.", "",
             "| implementation | dtype | step time | vs PyTorch | peak RSS | GPU used | PyTorch max allocated |",
             "|---|---|---|---|---|---|---|"]
    for name, step in runs.items():
        r = step.get("result") or {}
        dtype = name.split("_")[2]
        label = "PyTorch + PEFT" if "_pytorch_" in name else (
            "candle, checkpoint" if name.endswith("_checkpoint") else "candle, full graph")
        if step["status"] != "ok":
            lines.append(f"| {label} | {dtype} | {step['status']}: {one_line(step.get('error') or step.get('reason'))} | | | | |")
            continue
        torch_step = result_of(report, f"dpo_pytorch_{dtype}").get("step_s_median")
        ratio = r["step_s_median"] / torch_step if torch_step else None
        lines.append(f"| {label} | {dtype} | {r['step_s_median']:.3f} s | {fmt(ratio, '.2f', '×')} | "
                     f"{fmt(r.get('peak_rss_mib'), ',.0f', ' MiB')} | {fmt(r.get('gpu_used_mib'), ',.0f', ' MiB')} | "
                     f"{fmt(r.get('gpu_max_allocated_mib'), ',.0f', ' MiB')} |")
    return lines + [""]


def md_hot_swap(report):
    step = report["steps"].get("hot_swap")
    if not step:
        return []
    if step["status"] == "error":
        return [f"Hot-swap: error: {one_line(step['error'])}", ""]
    r = step["result"]
    load = r["during_swap"]
    return [
        "| hot-swap (random LoRA r = 8 on q/k/v/o) | |", "|---|---|",
        f"| result | {'pass' if r['passed'] else 'FAIL'} (activate: HTTP {r['activate_status']}"
        + ("" if r["activate_status"] == 200 else f": {one_line(json.dumps(r['activate_response']))}") + ") |",
        f"| activation call | {r['activate_call_s']:.3f} s |",
        f"| activation sent → first answer from version {r['version']} | "
        f"{fmt(r['first_answer_from_new_version_s'], '.3f', ' s')} |",
        f"| requests during the swap | {load['requests'] - load['failed']}/{load['requests']} succeeded "
        f"(answers by version {load['answers_by_version']}); polls {r['polls']}, {r['poll_failures']} failed |",
        f"| greedy answer changed by the adapter | {'yes' if r['answer_changed'] else 'no'} |",
        "",
    ]


def md_problems(report):
    problems = [f"- `{name}`: {step['status']}" + (f": {one_line(step.get('error') or step.get('reason'))}"
                                                     if step.get("error") or step.get("reason") else "")
                for name, step in report["steps"].items() if step["status"] != "ok"]
    for name in ("throughput_flywheel", "throughput_bare"):
        problems += [f"- `{name}` at concurrency {e['concurrency']}: {one_line(e['error'])}"
                     for e in result_of(report, name).get("errors", [])]
    return (["Problems:", ""] + problems + [""]) if problems else []


# ---------------------------------------------------------------- self-test and entry point

def self_test():
    """Round-trips the stdlib file writers (no binary needed)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        base = tmp / "base"
        base.mkdir()
        (base / "config.json").write_text(json.dumps({"vocab_size": 50}))
        rng = random.Random(0)
        weights = {}
        for i in range(2):
            for module, out in (("q_proj", 16), ("k_proj", 8), ("v_proj", 8), ("o_proj", 16)):
                values = array.array("f", (rng.gauss(0, 0.2) for _ in range(out * 16)))
                weights[f"model.layers.{i}.self_attn.{module}.weight"] = ((out, 16), values)
        weights["model.norm.weight"] = ((16,), array.array("f", [1.0] * 16))
        write_safetensors(base / "model.safetensors", weights)
        header, start = read_safetensors_header(base / "model.safetensors")
        assert start % 8 == 0, start
        for name, (shape, values) in weights.items():
            assert header[name]["shape"] == list(shape), name
            assert read_tensor(base / "model.safetensors", name) == list(values), name
        assert set(lora_layers(base)) == {n[: -len(".weight")] for n in weights if "proj" in n}

        info = write_lora_adapter(base, tmp / "lora", rank=4, alpha=8, seed=1)
        assert info["layers"] == 8, info
        config = json.loads((tmp / "lora" / "adapter_config.json").read_text())
        assert config["r"] == 4 and config["target_modules"] == list(LORA_TARGETS), config
        lora, _ = read_safetensors_header(tmp / "lora" / "adapter_model.safetensors")
        assert len(lora) == 16, sorted(lora)
        a = lora["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"]
        b = lora["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]
        assert a["shape"] == [4, 16] and b["shape"] == [8, 4] and a["dtype"] == "F32", (a, b)
        values = read_tensor(tmp / "lora" / "adapter_model.safetensors",
                             "base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight")
        assert any(values) and all(math.isfinite(v) for v in values)

        write_pairs(base, tmp / "pairs.json", pairs=3, prompt=5, response=7, seed=0)
        pairs = json.loads((tmp / "pairs.json").read_text())["pairs"]
        assert len(pairs) == 3 and all(len(p["prompt"]) == 5 and len(p["chosen"]) == 7 for p in pairs)
        assert all(3 <= t < 50 for p in pairs for k in ("prompt", "chosen", "rejected") for t in p[k])

        # Batched answers that leave the solo one: at the solo's second token by a hair (a near-tie),
        # by a wide margin, or to a token outside the solo's top two.
        def choice(*positions):
            return {"logprobs": {"content": [
                {"token": tok, "logprob": top[0][1], "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}
                for tok, top in positions]}}
        solo = choice(("a", [("a", -0.1), ("x", -2.0)]), ("b", [("b", -0.70), ("c", -0.74)]))
        near = divergence(solo, choice(("a", [("a", -0.1)]), ("c", [("c", -0.7)])))
        assert near["near_tie"] and near["token_index"] == 1 and abs(near["solo_top2_gap"] - 0.04) < 1e-9, near
        wide_solo = choice(("a", [("a", -0.1), ("x", -2.0)]))
        assert not divergence(wide_solo, choice(("x", [("x", -0.1)])))["near_tie"]
        assert not divergence(solo, choice(("a", [("a", -0.1)]), ("z", [("z", -0.7)])))["near_tie"]
        assert divergence(solo, solo)["token_index"] is None

        report = {"device": "cpu", "steps": {"correctness": {"status": "error", "error": "x"},
                                              "dpo_candle_f32": {"status": "ok", "result": {"step_s_median": 1.0}}}}
        assert "dpo_candle_f32" not in "\n".join(md_problems(report)) and "correctness" in markdown(report)
    print("self-test passed")


def default_out():
    return os.environ.get("OUT") or str(ROOT / "bench" / "gpu_check-out")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=sorted(PLANS), default="cuda")
    parser.add_argument("--bin", help="the flywheel binary (default: $FLYWHEEL_BIN)")
    parser.add_argument("--out", default=default_out(), help="where the report goes (default: $OUT or bench/gpu_check-out)")
    parser.add_argument("--budget-s", type=float, help="time budget; later steps are skipped once it is spent")
    parser.add_argument("--decode-slots", type=int, help="passed to flywheel serve (default: the server's own)")
    parser.add_argument("--keep-work", action="store_true", help="keep the models and store in the temporary work dir")
    parser.add_argument("--correctness-only", action="store_true",
                        help="only the environment, the serving model and the correctness checks")
    parser.add_argument("--dpo-only", action="store_true", help="only the environment and the DPO step")
    parser.add_argument("--self-test", action="store_true", help="check the file writers and exit")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    args.bin = args.bin or os.environ.get("FLYWHEEL_BIN")
    if not args.bin or not os.access(args.bin, os.X_OK):
        parser.error(f"no executable flywheel binary: {args.bin!r} (give --bin or FLYWHEEL_BIN)")
    args.bin = str(pathlib.Path(args.bin).resolve())
    plan = PLANS[args.device]
    if args.budget_s:
        plan = dataclasses.replace(plan, budget_s=args.budget_s)
    check = Check(args, plan)
    try:
        check.run()
    finally:
        status = check.finish()
    return status


if __name__ == "__main__":
    sys.exit(main())
