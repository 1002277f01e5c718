"""One real gate decision: a candidate adapter duels the incumbent on held-out prompts, a rule judge
judges the duels blind through the annotation queue, and the gate promotes or retires it.

    python3 bench/arena_gate.py --model ~/.cache/flywheel/models/smollm2-135m-instruct/hf \
        --adapter /path/to/peft-dir [--judge shorter|longer] [--min-judgments 50]

It starts `flywheel serve` (SQLite in a temporary directory, no worker, the arena on), posts the
evaluation prompts below, registers the adapter (a copy under the server's adapter root) as a
candidate, then judges every pair the queue hands out by a blind rule until the candidate leaves
`candidate`. It prints the decision as recorded, the candidate's standing from `GET /v1/arena`, and
timings. Only the standard library is used.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

KEY = "arena-bench-admin-key-0123456789"

PROMPTS = [
    "What is the capital of France?", "Name a primary colour.", "What is 7 times 8?",
    "Give one use of a hammer.", "What does DNS stand for?", "Name a planet in the solar system.",
    "What is the boiling point of water in Celsius?", "Who wrote Romeo and Juliet?",
    "What is the opposite of hot?", "Name a fruit that is yellow.", "What is H2O?",
    "How many days are in a week?", "What language is spoken in Brazil?", "Name a mammal that flies.",
    "What is the largest ocean?", "What do bees make?", "What is 15 minus 6?",
    "Name a musical instrument with strings.", "What is the freezing point of water in Fahrenheit?",
    "What gas do plants take in?", "Name the first month of the year.", "What is a synonym for happy?",
    "How many legs does a spider have?", "What is the chemical symbol for gold?",
    "Name a continent.", "What shape has three sides?", "What is the square root of 81?",
    "Which animal is known as the king of the jungle?", "What colour is the sky on a clear day?",
    "What do you call a baby cat?",
]


def call(base, method, path, body=None):
    request = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {KEY}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", default=os.path.expanduser("~/.cache/flywheel/target/release/flywheel"))
    parser.add_argument("--model", required=True, help="HF-format base model directory")
    parser.add_argument("--adapter", required=True, help="PEFT LoRA directory to register as the candidate")
    parser.add_argument("--judge", choices=["shorter", "longer"], default="shorter",
                        help="the rule: the shorter (or longer) answer wins; equal lengths tie")
    parser.add_argument("--min-judgments", type=int, default=50)
    parser.add_argument("--max-judgments", type=int, default=400)
    parser.add_argument("--duel-max-tokens", type=int, default=48)
    parser.add_argument("--port", type=int, default=18532)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="flywheel-arena-")
    root = os.path.join(work, "adapters")
    shutil.copytree(args.adapter, os.path.join(root, "candidate"))
    base = f"http://127.0.0.1:{args.port}"
    env = dict(os.environ, DATABASE_URL=f"sqlite://{work}/arena.db", FLYWHEEL_ADMIN_KEY=KEY,
               RUST_LOG=os.environ.get("RUST_LOG", "info"))
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [args.bin, "serve", "--model", args.model, "--port", str(args.port), "--no-worker",
         "--adapter-root", root, "--arena-interval-secs", "1",
         "--gate-min-judgments", str(args.min_judgments), "--gate-max-judgments", str(args.max_judgments),
         "--duel-max-tokens", str(args.duel_max_tokens)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{base}/ready", timeout=5).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        else:
            sys.exit(f"server not ready; see {work}/server.log")

        status, _ = call(base, "POST", "/v1/eval-prompts",
                         {"eval_prompts": [{"messages": [{"role": "user", "content": p}]} for p in PROMPTS]})
        assert status in (200, 201), status
        status, candidate = call(base, "POST", "/v1/adapters",
                                 {"path": "candidate", "algorithm": "external", "note": "arena_gate.py"})
        assert status == 201, candidate
        version = candidate["version"]
        print(f"candidate: version {version} against the base model (version 0); "
              f"{len(PROMPTS)} eval prompts; judge: the {args.judge} answer wins", flush=True)

        started, judged, ties = time.time(), 0, 0
        while time.time() - started < args.timeout:
            status, item = call(base, "GET", "/v1/annotation/next?annotator=rule-" + args.judge)
            if status == 204:
                status, adapter = call(base, "GET", f"/v1/adapters/{version}")
                if adapter["status"] != "candidate":
                    break
                time.sleep(0.5)
                continue
            assert status == 200, item
            left, right = len(item["left"]["text"]), len(item["right"]["text"])
            if left == right:
                outcome, ties = "tie", ties + 1
            elif (left < right) == (args.judge == "shorter"):
                outcome = "a"
            else:
                outcome = "b"
            status, body = call(base, "POST", "/v1/judgments", {
                "group_id": item["group_id"], "response_a": item["left"]["response_id"],
                "response_b": item["right"]["response_id"], "outcome": outcome,
                "annotator": "rule-" + args.judge, "source": "rule",
                "assignment_id": item["assignment_id"],
                "rationale": f"{args.judge} answer wins ({left} vs {right} characters)"})
            assert status == 201, body
            judged += 1
            if judged % 10 == 0:
                print(f"  {judged} judgments after {time.time() - started:.0f} s", flush=True)
            status, adapter = call(base, "GET", f"/v1/adapters/{version}")
            if adapter["status"] != "candidate":
                break
        elapsed = time.time() - started
        # The arena looks once a second; give it a moment to record a decision it just made.
        for _ in range(20):
            status, adapter = call(base, "GET", f"/v1/adapters/{version}")
            if adapter["decisions"]:
                break
            time.sleep(0.5)
        status, arena = call(base, "GET", "/v1/arena")
        print(json.dumps({"status": adapter["status"], "decisions": adapter["decisions"],
                          "judgments_posted": judged, "ties": ties, "seconds": round(elapsed, 1),
                          "leaderboard": arena["leaderboard"]}, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        if os.environ.get("KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
