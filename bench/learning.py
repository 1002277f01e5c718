"""The learning benchmark: does the loop make the model better? (issue 11, part 3)

    PY=~/.cache/flywheel/bench-venv/bin/python          # numpy + matplotlib
    $PY bench/learning.py run --algo dpo --rounds 3 \
        --bin /tmp/learn-bin/flywheel --torch-python ~/.cache/flywheel/trl-venv/bin/python
    $PY bench/learning.py baseline --samples 32           # the base model's rate under the rule
    $PY bench/learning.py report                          # table + plot from bench/learning/*.json

`run` drives the real loop through the HTTP API only. It starts `flywheel serve` (SQLite in a
temporary directory, SmolLM2-135M-Instruct, the in-process trainer worker) and repeats rounds of

  1. sample: n = 4 answers per fresh train prompt (`POST /v1/chat/completions`, seeded);
  2. judge:  `flywheel judge --kind program --judge-command 'python3 bench/learning_judge.py'`
             takes every pair from the annotation queue and posts it (`source: "rule"`)
             (`--judge llm`: `flywheel judge --kind llm` on the server's own model instead; a
             round whose judge posts nothing ends the run, since there is nothing to train on);
  3. train:  the worker sees the new judgments, trains a child of the active adapter on the
             incumbent's own judged samples (`--worker-algo`), and the child serves
             (`--promotion always`), or goes through the arena's gate (`--promotion gate`: the
             held-out prompts are the evaluation prompts and the same judge judges the duels);
  4. measure, on prompts training never sees:
     * win-rate of the version now serving against the base (version 0): for each held-out
       prompt, one answer of each with the same seed and parameters, judged by the same rule
       (`learning_judge.verdict`), ties half; bootstrap 95% interval over prompts. The base's
       answers are sampled once at round 0 (version 0 is not loaded once an adapter is active;
       the same seed, prompt, parameters and version give the same sample, see the README);
     * what the rule does not reward: accuracy on a keyed question set (capitals, arithmetic;
       greedy; correct when the key appears) and the share of held-out answers that mention the
       prompt's topic;
     * KL(pi_t || pi_0): the mean over held-out prompts of sum_t [log pi_t(y_t) - log pi_0(y_t)] on
       the answer y ~ pi_t, both at the sampling temperature (see `kl_estimate`).

Results go to bench/learning/<algo>.json after every round (so a cut-short run keeps its rounds);
`report` writes results.md, results.json and winrate.png from them. Prompts come from templates
(`make_prompts`), seeded, so every run sees the same split.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import learning_judge  # noqa: E402

KEY = "learning-bench-admin-key-0123456789"
OUT = os.path.join(HERE, "learning")
MODEL_DIR = os.path.expanduser("~/.cache/flywheel/models/smollm2-135m-instruct/hf")

TOPICS = [
    "photosynthesis", "gravity", "the internet", "recycling", "vaccines", "volcanoes", "rainbows",
    "electricity", "the moon", "democracy", "exercise", "sleep", "coffee", "bicycles", "bees",
    "rain", "the ocean", "money", "music", "friendship", "computers", "trees", "the sun",
    "earthquakes", "batteries", "clouds", "bread", "libraries", "email", "maps", "solar panels",
    "wind", "salt", "glaciers", "the heart", "chess", "gardening", "reading", "cooking", "rivers",
    "deserts", "honey", "magnets", "tea", "snow",
]
TEMPLATES = [
    "In one sentence, explain {t}.", "Define {t} in one sentence.", "Briefly, why is {t} important?",
    "What is {t}? Answer briefly.", "Describe {t}.", "Tell me something interesting about {t}.",
]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"),
            ("Spain", "Madrid"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"),
            ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Norway", "Oslo"), ("Ireland", "Dublin"),
            ("Austria", "Vienna"), ("Poland", "Warsaw"), ("China", "Beijing")]
ARITHMETIC = [(3, 4), (7, 5), (12, 9), (8, 8), (15, 6), (21, 13), (9, 11), (30, 12), (6, 7),
              (14, 14), (25, 17), (40, 19), (11, 2), (16, 23), (5, 9)]


def make_prompts(heldout, seed=0):
    """(train, held_out, keyed): template prompts split at random; keyed questions with answers."""
    import random
    prompts = [{"prompt": tpl.format(t=topic), "topic": topic} for topic in TOPICS for tpl in TEMPLATES]
    random.Random(seed).shuffle(prompts)
    keyed = [{"prompt": f"What is the capital of {c}?", "key": k} for c, k in CAPITALS]
    keyed += [{"prompt": f"What is {a} plus {b}?", "key": str(a + b)} for a, b in ARITHMETIC]
    return prompts[heldout:], prompts[:heldout], keyed


def topic_stem(topic):
    """A rough stem of the topic's main word ("batteries" -> "batter", "bees" -> "bee")."""
    word = max((w for w in topic.split() if w != "the"), key=len).lower()
    return word[:max(3, len(word) - 1)] if len(word) <= 6 else word[:len(word) - 3]


def on_topic(text, topic):
    return topic_stem(topic) in text.lower()


def key_correct(text, key):
    if key.isdigit():
        return key in re.findall(r"\d+", text.replace(",", ""))
    return key.lower() in text.lower()


# ---------------------------------------------------------------- HTTP


def call(base, method, path, body=None, timeout=900):
    request = urllib.request.Request(base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {KEY}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def chat(base, model, prompt, n, seed, temperature, max_tokens):
    status, out = call(base, "POST", "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": prompt}], "n": n, "seed": seed,
        "temperature": temperature, "max_tokens": max_tokens})
    assert status == 200, (status, out)
    return out


class Server:
    """`flywheel serve` in a temporary directory with the worker and the arena configured."""

    def __init__(self, args, work):
        self.base = f"http://127.0.0.1:{args.port}"
        self.log_path = os.path.join(work, "server.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, DATABASE_URL=f"sqlite://{work}/learning.db", FLYWHEEL_ADMIN_KEY=KEY,
                   RUST_LOG="warn,flywheel_server=info,flywheel_trainer=info")
        self.command = [
            args.bin, "serve", "--model", args.model, "--port", str(args.port),
            "--adapter-dir", os.path.join(work, "adapters"),
            "--worker-algo", args.algo, "--min-new-judgments", str(args.min_new_judgments),
            "--steps", str(args.steps), "--lr", str(args.lr), "--rank", str(args.rank),
            "--batch", str(args.batch), "--worker-interval-secs", "5", "--seed", str(args.seed),
            "--promotion", args.promotion,
            "--gate-min-judgments", str(args.gate_min), "--gate-max-judgments", str(args.gate_max),
            "--duel-max-tokens", str(args.max_tokens), "--duel-temperature", str(args.temperature),
            "--arena-interval-secs", "2", "--follow-interval-secs", "2"]
        if args.no_worker:
            self.command.append("--no-worker")
        self.process = subprocess.Popen(self.command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"server exited; see {self.log_path}")
            try:
                if urllib.request.urlopen(f"{self.base}/ready", timeout=5).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        else:
            sys.exit(f"server not ready; see {self.log_path}")
        time.sleep(1)
        if self.process.poll() is not None:  # another server answered on this port
            sys.exit(f"server exited (port {args.port} taken?); see {self.log_path}")
        status, models = call(self.base, "GET", "/v1/models")
        self.model = models["data"][0]["id"].split("@")[0]

    def ready(self):
        return call(self.base, "GET", "/ready")[1]

    def log_text(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read())

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def run_judge(args, server, name):
    """`flywheel judge --until-empty` once (the program judge, or with `--judge llm` the LLM judge
    on the server's own model); its final counts."""
    env = dict(os.environ, FLYWHEEL_API_KEY=KEY, LEARNING_MAX_WORDS=str(args.max_words))
    command = [args.bin, "judge", "--server-url", server.base, "--name", name,
               "--until-empty", "--judge-concurrency", "2", "--poll-secs", "1"]
    if args.judge == "llm":
        command += ["--kind", "llm", "--judge-max-tokens", str(args.judge_max_tokens)]
        if args.rubric:
            command += ["--rubric", args.rubric]
    else:
        command += ["--kind", "program", "--judge-command",
                    f"{sys.executable if args.judge_python is None else args.judge_python} "
                    f"{os.path.join(HERE, 'learning_judge.py')}"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"judge failed ({out.returncode}): {out.stderr[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


# ---------------------------------------------------------------- measures


def sample_heldout(args, server, held_out, version):
    """One answer per held-out prompt from `version` (pinned), seed per prompt; with its response."""
    model = f"{server.model}@{version}"
    answers = []
    for i, p in enumerate(held_out):
        out = chat(server.base, model, p["prompt"], 1, 10_000 + i, args.temperature, args.max_tokens)
        assert out["adapter"] == version, (out["adapter"], version)
        choice = out["choices"][0]
        answers.append({"text": choice["message"]["content"], "finish": choice["finish_reason"],
                        "response_id": choice["response_id"], "group_id": out["group_id"]})
    return answers


def keyed_accuracy(args, server, keyed, version):
    model = f"{server.model}@{version}"
    correct = 0
    examples = []
    for i, q in enumerate(keyed):
        out = chat(server.base, model, q["prompt"], 1, 20_000 + i, 0.0, 32)
        text = out["choices"][0]["message"]["content"]
        ok = key_correct(text, q["key"])
        correct += ok
        if len(examples) < 4:
            examples.append({"prompt": q["prompt"], "answer": text, "correct": ok})
    return correct / len(keyed), examples


def bootstrap(outcomes, rounds=2000, seed=0):
    import numpy as np
    x = np.asarray(outcomes, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(rounds, len(x)))].mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(current, base):
    """Per prompt: 1 if the current answer wins under the rule, 0.5 tie, 0 loss."""
    outcomes = []
    for c, b in zip(current, base):
        outcome, _ = learning_judge.verdict(c["text"], b["text"])
        outcomes.append({"a": 1.0, "tie": 0.5, "b": 0.0}[outcome])
    return outcomes


def kl_estimate(args, server, held_out, answers):
    """Monte-Carlo KL(pi_t || pi_0) on the held-out answers y ~ pi_t (temperature T, top_p 1).

    log pi_t(y_t) is what the server stored for the token it drew (temperature applied);
    log pi_0(y_t) is the base model's log-softmax(logits / T) for the same tokens after the same
    chat-templated prompt, computed in PyTorch (`--torch-python`, the `kl-score` mode below).
    KL = mean over prompts of the summed difference (nats per answer); also per token. At round 0
    both sides are the base model, so the estimate there checks the machinery (it should be ~0).
    """
    if not args.torch_python:
        return None
    items = []
    for p, a in zip(held_out, answers):
        status, response = call(server.base, "GET", f"/v1/responses/{a['response_id']}")
        assert status == 200, response
        lp = response["logprobs"] or []
        if isinstance(lp, dict):
            lp = lp.get("content") or lp.get("values") or []
        lp = [x["logprob"] if isinstance(x, dict) else x for x in lp]
        m = min(len(lp), len(response["token_ids"]))
        items.append({"messages": [{"role": "user", "content": p["prompt"]}],
                      "token_ids": response["token_ids"][:m], "logprobs": lp[:m]})
    payload = json.dumps({"model": args.model, "temperature": args.temperature, "items": items})
    out = subprocess.run([args.torch_python, os.path.abspath(__file__), "kl-score"], input=payload,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        print(f"  kl-score failed: {out.stderr[-1500:]}", flush=True)
        return None
    base_lp = json.loads(out.stdout)
    seq, toks, tokens = [], [], 0
    for item, b in zip(items, base_lp):
        diff = [t - s for t, s in zip(item["logprobs"], b)]
        seq.append(sum(diff))
        toks.extend(diff)
        tokens += len(diff)
    return {"kl_per_answer": sum(seq) / len(seq), "kl_per_token": sum(toks) / max(1, tokens),
            "tokens": tokens}


def kl_score_main():
    """Runs under PyTorch: base-model log-probs (logits / T) of given tokens after given prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(2)
    job = json.load(sys.stdin)
    tok = AutoTokenizer.from_pretrained(job["model"])
    model = AutoModelForCausalLM.from_pretrained(job["model"], torch_dtype=torch.float32).eval()
    result = []
    with torch.no_grad():
        for item in job["items"]:
            prompt = tok.apply_chat_template(item["messages"], add_generation_prompt=True, tokenize=True)
            if isinstance(prompt, dict) or hasattr(prompt, "input_ids"):
                prompt = prompt["input_ids"]
            ids = list(prompt) + list(item["token_ids"])
            if not item["token_ids"]:
                result.append([])
                continue
            logits = model(torch.tensor([ids])).logits[0].float() / job["temperature"]
            logp = torch.log_softmax(logits, dim=-1)
            start = len(prompt)
            targets = torch.tensor(item["token_ids"])
            picked = logp[start - 1:start - 1 + len(targets)].gather(1, targets[:, None])[:, 0]
            result.append(picked.tolist())
    print(json.dumps(result))


def train_metrics(log_text, since_chars):
    """The worker's step lines (loss, margin) and data report logged since an offset."""
    text = log_text[since_chars:]
    steps = [(int(s), float(l), float(m)) for s, l, m in
             re.findall(r"train step.*?step=(\d+).*?loss=([-\d.e+na]+).*?margin=([-\d.e+na]+)", text)]
    data = re.findall(r"training data.*?report=(.*)", text)
    failed = re.findall(r"training failed.*", text)
    return {"steps": len(steps), "loss_first": steps[0][1] if steps else None,
            "loss_last": steps[-1][1] if steps else None,
            "margin_last": steps[-1][2] if steps else None,
            "data": data[-1].strip() if data else None, "failed": failed[-1][:500] if failed else None}


# ---------------------------------------------------------------- the loop


def measure(args, server, split, version, base_answers, record):
    _, held_out, keyed = split
    t0 = time.time()
    answers = sample_heldout(args, server, held_out, version)
    outcomes = compare(answers, base_answers if base_answers is not None else answers)
    mean, lo, hi = bootstrap(outcomes)
    acc, keyed_examples = keyed_accuracy(args, server, keyed, version)
    kl = kl_estimate(args, server, held_out, answers)
    record.update({
        "version": version, "win_rate": mean, "ci_low": lo, "ci_high": hi,
        "wins": sum(o == 1.0 for o in outcomes), "ties": sum(o == 0.5 for o in outcomes),
        "losses": sum(o == 0.0 for o in outcomes),
        "rule_satisfied": sum(learning_judge.satisfied(a["text"]) for a in answers) / len(answers),
        "mean_words": sum(len(a["text"].split()) for a in answers) / len(answers),
        "truncated": sum(a["finish"] == "length" for a in answers) / len(answers),
        "on_topic": sum(on_topic(a["text"], p["topic"]) for a, p in zip(answers, held_out)) / len(answers),
        "keyed_accuracy": acc, "keyed_examples": keyed_examples,
        "kl": kl, "examples": [{"prompt": p["prompt"], "answer": a["text"]}
                               for p, a in list(zip(held_out, answers))[:4]],
        "measure_seconds": round(time.time() - t0, 1)})
    return answers


def save(args, results):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{args.tag or args.algo}.json"), "w") as f:
        json.dump(results, f, indent=2)


def wait_for_version(args, server, previous, log_offset, timeout):
    """Under `always`: the version the worker activates after `previous`; under `gate`: the
    candidate's decision. Returns (version serving now, decision or None)."""
    deadline = time.time() + timeout
    candidate = None
    while time.time() < deadline:
        metrics = train_metrics(server.log_text(), log_offset)
        if metrics["failed"]:
            raise RuntimeError(f"training failed: {metrics['failed']}")
        if args.promotion == "always":
            ready = server.ready()
            if ready.get("adapter", previous) != previous and ready.get("status") == "ready":
                return ready["adapter"], None
            time.sleep(2)
            continue
        # gate: find the candidate, then judge its duels until it is decided
        if candidate is None:
            status, adapter = call(server.base, "GET", f"/v1/adapters/{args._next_version}")
            if status == 200 and adapter["status"] == "failed":
                raise RuntimeError(f"adapter {args._next_version} failed: {adapter.get('error')}")
            if status == 200 and adapter["status"] != "training":  # registered once trained
                candidate = adapter["version"]
                print(f"  candidate {candidate} registered; judging duels", flush=True)
            else:
                time.sleep(3)
            continue
        counts = run_judge(args, server, f"{args.judge}-judge")
        args._duels_posted += counts.get("posted", 0)
        status, adapter = call(server.base, "GET", f"/v1/adapters/{candidate}")
        if adapter["status"] != "candidate":
            decision = adapter["decisions"][0] if adapter["decisions"] else {"action": adapter["status"]}
            serving = candidate if adapter["status"] == "active" else previous
            for _ in range(60):  # the server follows the store's active version within seconds
                ready = server.ready()
                if ready.get("status") == "ready" and ready.get("adapter") == serving:
                    break
                time.sleep(1)
            args._next_version = candidate + 1
            return serving, decision
        time.sleep(2)
    raise TimeoutError("no new version in time")


def run(args):
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    split = make_prompts(args.heldout, args.prompt_seed)
    train, held_out, keyed = split
    need = args.rounds * args.train_per_round
    if need > len(train):
        print(f"note: {need} train prompts wanted, {len(train)} exist; prompts repeat with new seeds")
    work = tempfile.mkdtemp(prefix="flywheel-learning-")
    server = Server(args, work)
    results = {"algo": args.algo, "promotion": args.promotion, "settings": {
        k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("func",)},
        "command": " ".join(sys.argv), "server_command": " ".join(server.command),
        "prompts": {"train": len(train), "held_out": len(held_out), "keyed": len(keyed)},
        "rule": f"complete (ends with a full stop) + at most {args.max_words} words; <3 words scores 0",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": []}
    args._next_version = 1
    args._duels_posted = 0
    try:
        if args.promotion == "gate":
            status, body = call(server.base, "POST", "/v1/eval-prompts", {"eval_prompts": [
                {"messages": [{"role": "user", "content": p["prompt"]}], "label": "learning-heldout"}
                for p in held_out]})
            assert status in (200, 201), body
        print(f"server up ({server.model}); {work}", flush=True)
        record = {"round": 0}
        base_answers = measure(args, server, split, 0, None, record)
        record["win_rate"], record["ci_low"], record["ci_high"] = 0.5, 0.5, 0.5
        results["rounds"].append(record)
        save(args, results)
        print(f"round 0: base satisfies the rule on {record['rule_satisfied']:.0%} of held-out answers; "
              f"keyed accuracy {record['keyed_accuracy']:.0%}; KL check {record['kl']}", flush=True)
        version = 0
        for r in range(1, args.rounds + 1):
            rec = {"round": r}
            t0 = time.time()
            chunk = [train[(i) % len(train)] for i in range((r - 1) * args.train_per_round,
                                                           r * args.train_per_round)]
            for i, p in enumerate(chunk):
                chat(server.base, f"{server.model}@{version}", p["prompt"], args.n, 1_000_000 * r + i,
                     args.temperature, args.max_tokens)
            rec["sample_seconds"] = round(time.time() - t0, 1)
            log_offset = len(server.log_text())
            t1 = time.time()
            counts = run_judge(args, server, f"{args.judge}-judge")
            rec["judge"] = counts
            rec["judge_seconds"] = round(time.time() - t1, 1)
            print(f"round {r}: sampled {len(chunk)}x{args.n} in {rec['sample_seconds']} s; judge {counts} "
                  f"in {rec['judge_seconds']} s", flush=True)
            if not counts.get("posted"):
                rec["stopped"] = "the judge posted no judgment, so there is nothing to train on"
                results["rounds"].append(rec)
                print(f"round {r}: {rec['stopped']}; stopping", flush=True)
                break
            t2 = time.time()
            args._duels_posted = 0
            new_version, decision = wait_for_version(args, server, version, log_offset, args.train_timeout)
            rec["train"] = train_metrics(server.log_text(), log_offset)
            rec["train_seconds"] = round(time.time() - t2, 1)
            rec["decision"] = decision
            rec["duel_judgments"] = args._duels_posted if args.promotion == "gate" else None
            version = new_version
            print(f"round {r}: version {version} serving after {rec['train_seconds']} s "
                  f"(train {rec['train']}; decision {decision and decision.get('action')})", flush=True)
            measure(args, server, split, version, base_answers, rec)
            rec["round_seconds"] = round(time.time() - t0, 1)
            results["rounds"].append(rec)
            save(args, results)
            print(f"round {r}: win-rate vs base {rec['win_rate']:.3f} [{rec['ci_low']:.3f}, {rec['ci_high']:.3f}] "
                  f"(W/T/L {rec['wins']}/{rec['ties']}/{rec['losses']}); rule {rec['rule_satisfied']:.0%}; "
                  f"keyed {rec['keyed_accuracy']:.0%}; on-topic {rec['on_topic']:.0%}; "
                  f"words {rec['mean_words']:.1f}; KL {rec['kl']}", flush=True)
    finally:
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        save(args, results)
        server.stop()
        keep = os.path.join(OUT, f"{args.tag or args.algo}-server.log")
        shutil.copy(server.log_path, keep)
        if not os.environ.get("KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    report(args)


def baseline(args):
    """The base model's rate under the rule, on `--samples` train prompts (one answer each)."""
    train, _, _ = make_prompts(args.heldout, args.prompt_seed)
    work = tempfile.mkdtemp(prefix="flywheel-learning-base-")
    args.no_worker = True
    server = Server(args, work)
    try:
        scores = []
        for i, p in enumerate(train[:args.samples]):
            out = chat(server.base, f"{server.model}@0", p["prompt"], 1, 30_000 + i, args.temperature,
                       args.max_tokens)
            text = out["choices"][0]["message"]["content"]
            scores.append(learning_judge.score(text))
            print(f"{learning_judge.score(text)[0]} {out['choices'][0]['finish_reason']:6} "
                  f"{p['prompt']!r} -> {text!r}", flush=True)
        n = len(scores)
        summary = {"samples": n, "max_words": args.max_words, "max_tokens": args.max_tokens,
                   "satisfied": sum(s[0] == 2 for s in scores) / n,
                   "complete": sum(s[2] for s in scores) / n, "concise": sum(s[3] for s in scores) / n,
                   "mean_words": sum(s[1] for s in scores) / n}
        print(json.dumps(summary))
        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "baseline.json"), "w") as f:
            json.dump(summary, f, indent=2)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- report


def report(args):
    runs = []
    for name in sorted(os.listdir(OUT)) if os.path.isdir(OUT) else []:
        if name.endswith(".json") and name not in ("results.json", "baseline.json"):
            with open(os.path.join(OUT, name)) as f:
                loaded = json.load(f)
            if loaded.get("rounds"):
                runs.append(loaded)
    if not runs:
        print("no runs")
        return
    lines = ["# Learning benchmark: win-rate against the base per round", "",
             "Generated by `bench/learning.py report` from the per-run JSON files here; "
             "see bench/RESULTS.md for the setup and commands.", ""]
    table = []
    for run_ in runs:
        s = run_["settings"]
        judge = s.get("judge", "program")
        lines += [f"## {run_['algo'].upper()} (`--promotion {run_['promotion']}`"
                  f"{', `--judge llm`' if judge == 'llm' else ''})", "",
                  f"{s['train_per_round']} train prompts x n={s['n']} per round, {run_['prompts']['held_out']} "
                  f"held-out prompts, {run_['prompts']['keyed']} keyed questions; steps {s['steps']}, "
                  f"lr {s['lr']}, rank {s['rank']}, batch {s['batch']}; max_tokens {s['max_tokens']}, "
                  f"temperature {s['temperature']}; rule: {run_['rule']}.", "",
                  "| round | version | win-rate vs base [95% CI] | W/T/L | rule satisfied | keyed accuracy "
                  "| on topic | mean words | truncated | KL nats/answer (per token) | training data, DPO/SPPO/INPO loss first→last step "
                  "| gate decision (candidate vs incumbent) | round time |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for rec in run_["rounds"]:
            if "win_rate" not in rec:  # a round cut short before anything was trained
                lines.append(f"| {rec['round']} | — | {rec.get('stopped', 'not measured')}: judge {rec.get('judge')} "
                             f"in {rec.get('judge_seconds')} s | | | | | | | | | | |")
                continue
            kl = rec.get("kl")
            kl_text = f"{kl['kl_per_answer']:.3f} ({kl['kl_per_token']:.4f})" if kl else "n/a"
            tr = rec.get("train") or {}
            pairs = re.match(r"(\d+) judged groups read: (\d+) gave a pair", tr.get("data") or "")
            tr_text = (f"{pairs.group(2) + '/' + pairs.group(1) + ' groups gave a pair; ' if pairs else ''}"
                       f"loss {tr['loss_first']:.3f}→{tr['loss_last']:.3f}" if tr.get("steps") else "—")
            dec = rec.get("decision")
            ev = (dec or {}).get("evidence") or {}
            dec_text = (f"{dec.get('action')}: P {ev.get('probability', 0):.2f} [{ev.get('lower', 0):.2f}, "
                        f"{ev.get('upper', 0):.2f}] on {ev.get('judgments')} duel judgments" if dec
                        else ("activated (always)" if rec["round"] else "—"))
            lines.append(
                f"| {rec['round']} | {rec['version']} | {rec['win_rate']:.3f} [{rec['ci_low']:.3f}, {rec['ci_high']:.3f}] "
                f"| {rec.get('wins', '')}/{rec.get('ties', '')}/{rec.get('losses', '')} "
                f"| {rec['rule_satisfied']:.0%} | {rec['keyed_accuracy']:.0%} | {rec['on_topic']:.0%} "
                f"| {rec['mean_words']:.1f} | {rec['truncated']:.0%} | {kl_text} | {tr_text} | {dec_text} "
                f"| {rec.get('round_seconds', rec.get('measure_seconds'))} s |")
            table.append({"algo": run_["algo"], "promotion": run_["promotion"], **{
                k: rec.get(k) for k in ("round", "version", "win_rate", "ci_low", "ci_high", "wins", "ties",
                                        "losses", "rule_satisfied", "keyed_accuracy", "on_topic",
                                        "mean_words", "truncated", "kl", "decision", "round_seconds")}})
        last = run_["rounds"][-1]
        lines += ["", "Held-out examples after the last round:", ""]
        for ex in last.get("examples", [])[:3]:
            lines.append(f"- *{ex['prompt']}* → {ex['answer']!r}")
        lines += ["", f"Command: `{run_['command']}`", "", f"Server: `{run_['server_command']}`", ""]
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(table, f, indent=2)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    plotted = [dict(r, rounds=[x for x in r["rounds"] if "win_rate" in x]) for r in runs]
    for k, run_ in enumerate(r for r in plotted if len(r["rounds"]) > 1):
        label = f"{run_['algo'].upper()} ({run_['promotion']})"
        rounds = [r["round"] for r in run_["rounds"]]
        wr = [r["win_rate"] for r in run_["rounds"]]
        err = [[r["win_rate"] - r["ci_low"] for r in run_["rounds"]],
               [r["ci_high"] - r["win_rate"] for r in run_["rounds"]]]
        x = [x + 0.06 * k for x in rounds]
        line = ax.errorbar(x, wr, yerr=err, marker="o", capsize=4, label=label)
        colour = line[0].get_color()
        for xr, r in zip(x, run_["rounds"]):
            dec = r.get("decision")
            if dec and dec.get("action") in ("promote", "retire"):
                ax.annotate("promoted" if dec["action"] == "promote" else "retired", (xr, r["win_rate"]),
                            textcoords="offset points", xytext=(4, -12), fontsize=7, color=colour)
        ax2.plot(x, [r["keyed_accuracy"] for r in run_["rounds"]], marker="s", color=colour,
                 label=f"{run_['algo'].upper()} keyed accuracy")
        ax2.plot(x, [r["on_topic"] for r in run_["rounds"]], marker="^", linestyle="--", color=colour,
                 label=f"{run_['algo'].upper()} on topic")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.axhline(0.7, color="green", linestyle="--", linewidth=0.8, label="target 0.7")
    ax.set_xlabel("round")
    ax.set_ylabel("win-rate vs base (held-out, ties ½, 95% CI)")
    ax.set_ylim(0, 1)
    ax.set_title("Rule win-rate against the base, SmolLM2-135M")
    ax.legend(loc="lower right", fontsize=8)
    ax2.set_xlabel("round")
    ax2.set_ylabel("share")
    ax2.set_ylim(0, 1)
    ax2.set_title("Not rewarded by the rule")
    ax2.legend(loc="lower left", fontsize=7)
    for a in (ax, ax2):
        a.set_xticks(sorted({r["round"] for run_ in runs for r in run_["rounds"]}))
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "winrate.png"), dpi=120)
    print(f"wrote {OUT}/results.md, results.json, winrate.png")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "kl-score":
        return kl_score_main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("run", "baseline", "report"):
        p = sub.add_parser(name)
        p.add_argument("--bin", default="/tmp/learn-bin/flywheel")
        p.add_argument("--model", default=MODEL_DIR)
        p.add_argument("--port", type=int, default=18640)
        p.add_argument("--algo", default="dpo", choices=["dpo", "sppo", "inpo", "ipo", "rpo"])
        p.add_argument("--tag", default=None, help="result file name (default: the algorithm)")
        p.add_argument("--promotion", default="always", choices=["always", "gate"])
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--train-per-round", type=int, default=32)
        p.add_argument("--heldout", type=int, default=48)
        p.add_argument("--prompt-seed", type=int, default=0)
        p.add_argument("--n", type=int, default=4)
        p.add_argument("--max-tokens", type=int, default=48)
        p.add_argument("--temperature", type=float, default=0.7)
        p.add_argument("--max-words", type=int, default=learning_judge.MAX_WORDS)
        p.add_argument("--steps", type=int, default=24)
        p.add_argument("--lr", type=float, default=2e-4)
        p.add_argument("--rank", type=int, default=16)
        p.add_argument("--batch", type=int, default=4)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--min-new-judgments", type=int, default=None,
                       help="default: 6 pairs per group x train prompts per round, less one group")
        p.add_argument("--gate-min", type=int, default=30)
        p.add_argument("--gate-max", type=int, default=90)
        p.add_argument("--train-timeout", type=float, default=1800)
        p.add_argument("--samples", type=int, default=32, help="baseline: prompts to sample")
        p.add_argument("--no-worker", action="store_true")
        p.add_argument("--torch-python", default=None,
                       help="a Python with torch + transformers, for the KL estimate (e.g. "
                            "~/.cache/flywheel/trl-venv/bin/python); without it no KL")
        p.add_argument("--judge-python", default="python3", help="the interpreter of the judge program")
        p.add_argument("--judge", default="program", choices=["program", "llm"],
                       help="program: learning_judge.py's rule; llm: `flywheel judge --kind llm` on the "
                            "server's own model (the win-rate is still measured by the rule)")
        p.add_argument("--judge-max-tokens", type=int, default=96)
        p.add_argument("--rubric", default=None, help="the LLM judge's rubric file (default: shipped)")
    args = parser.parse_args()
    os.environ["LEARNING_MAX_WORDS"] = str(args.max_words)
    learning_judge.MAX_WORDS = args.max_words
    if args.min_new_judgments is None:
        pairs = args.n * (args.n - 1) // 2
        args.min_new_judgments = max(1, pairs * (args.train_per_round - 1))
    {"run": run, "baseline": baseline, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
