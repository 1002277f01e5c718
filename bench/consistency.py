"""The consistency-GRPO benchmark (issue 12): does GRPO on variant groups make answers agree across
paraphrases, without making them less helpful? And does plain GRPO learn from a rule reward?

    python3 bench/consistency.py consistency --bin /tmp/cgrpo/flywheel --rounds 2
    python3 bench/consistency.py rule --bin /tmp/cgrpo/flywheel --rounds 2
    python3 bench/consistency.py report          # bench/consistency/results.md from the JSON files

Everything goes through the HTTP API of a real `flywheel serve` (SQLite in a temporary directory,
SmolLM2-135M-Instruct, the in-process worker, `--promotion always`):

`consistency`: enterprise-style canonical prompts with a known item vocabulary (index funds and job
titles, `bench/consistency/units.json`), each with 4 paraphrases written here, split into train and
held-out families. Round r: every train family becomes a variant group of the active version
(`POST /v1/variant-groups`, n samples per variant); the worker (`--worker-algo consistency-grpo`)
trains a child once they exist and it serves. Before round 1 and after every round, the held-out
families are sampled as held-out variant groups by the version serving, and `GET
/v1/consistency?adapter=V` gives the mean group consistency entropy (the cross-variant disagreement),
helpfulness, units per answer and answer length. Target: entropy ≥ 30% lower than the base's, mean
helpfulness not lower. With `--catalogue`, each family's system prompt lists the unit table's items of
its kind (the funds a brokerage offers, the job titles a careers service knows), as an enterprise
assistant's prompt would; the base is then measured under the same prompts. With `--gate-rule
distinct-items`, a rule posts each training answer's share of items that are not repeats
(`POST /v1/rewards`) and the worker multiplies the consistency rewards by it (`--quality-gate
posted`), so a list that names one title five times earns a fifth of its reward.

`rule`: plain GRPO on rewards posted through `POST /v1/rewards` by a rule (1 if the answer ends with a
full stop and has at most 25 words, else 0), on ordinary sample groups (n per prompt), measured as
the rule's pass rate on held-out prompts (one greedy-free sample each, fixed seeds).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "consistency")
KEY = "consistency-bench-admin-key-0123456789"
MODEL_DIR = os.path.expanduser("~/.cache/flywheel/models/smollm2-135m-instruct/hf")
UNITS = os.path.join(OUT, "units.json")

PEOPLE = [
    "a beginner investor", "a retiree", "a college student", "a parent saving for college",
    "a nurse in her thirties", "a small business owner", "someone close to retirement",
    "a teenager with a first job", "a couple buying their first home", "a freelance designer",
    "a teacher with a pension", "an engineer who wants low fees", "someone who hates risk",
    "a young doctor", "a farmer", "a new immigrant", "a software developer", "a single parent",
    "someone who wants income", "a graduate student",
]
BACKGROUNDS = [
    "a biology degree", "ten years in retail", "a math degree", "experience caring for elderly people",
    "a love of drawing", "a background in accounting", "a talent for fixing machines",
    "a psychology degree", "experience in the army", "a chemistry degree", "a passion for cooking",
    "a history degree", "strong people skills", "a statistics degree", "experience as a cashier",
    "a physics degree", "a law background", "experience in customer support", "a nursing diploma",
    "an economics degree",
]
FAMILIES = [
    ("funds", "Recommend three index funds for {x}.", [
        "Which three index funds would you suggest for {x}?",
        "I need three index fund picks for {x}. What are they?",
        "Name three good index funds for {x}.",
        "What three index funds should {x} buy?",
    ], PEOPLE),
    ("jobs", "Suggest three job titles for someone with {x}.", [
        "What three jobs would fit someone with {x}?",
        "Name three job titles that suit a person with {x}.",
        "I have {x}. Which three job titles should I look at?",
        "List three careers for someone with {x}.",
    ], BACKGROUNDS),
]
SYSTEM = "You are a helpful assistant. Answer briefly and name specific options."
CATALOGUE_SYSTEM = {
    "funds": "You are a brokerage's assistant. Recommend only funds from our catalogue: {items}. "
             "Answer briefly and name specific options.",
    "jobs": "You are a careers assistant. Suggest only job titles from our list: {items}. "
            "Answer briefly and name specific options.",
}


def system_prompt(kind, catalogue):
    """The system prompt of a family: the plain one, or with `--catalogue` the unit table's items of
    the family's kind, as an enterprise assistant's prompt would carry its product list."""
    if not catalogue:
        return SYSTEM
    units = [item["unit"] for item in json.load(open(UNITS))["items"]]
    items = [u for u in units if u.endswith((" index", " fund")) == (kind == "funds")]
    return CATALOGUE_SYSTEM[kind].format(items=", ".join(items))


def families(held_out, seed=0):
    """(train, held_out) families: canonical prompt + 4 paraphrases, split at random."""
    import random
    out = []
    for kind, canonical, paraphrases, fillers in FAMILIES:
        for x in fillers:
            out.append({"kind": kind, "prompt": canonical.format(x=x),
                        "paraphrases": [p.format(x=x) for p in paraphrases]})
    random.Random(seed).shuffle(out)
    return out[held_out:], out[:held_out]


# ---------------------------------------------------------------- HTTP


def call(base, method, path, body=None, timeout=1800):
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


class Server:
    def __init__(self, args, work, algo):
        self.base = f"http://127.0.0.1:{args.port}"
        self.log_path = os.path.join(work, "server.log")
        self.log = open(self.log_path, "a" if args.resume else "w")
        env = dict(os.environ, DATABASE_URL=f"sqlite://{work}/bench.db", FLYWHEEL_ADMIN_KEY=KEY,
                   RUST_LOG="warn,flywheel_server=info,flywheel_trainer=info",
                   FLYWHEEL_GRPO_EPSILON_HIGH=str(args.epsilon_high), FLYWHEEL_GRPO_LOSS=args.loss)
        command = [
            args.bin, "serve", "--model", args.model, "--port", str(args.port),
            "--adapter-dir", os.path.join(work, "adapters"), "--units", UNITS,
            "--worker-algo", algo, "--min-new-judgments", str(args.min_new),
            "--steps", str(args.steps), "--lr", str(args.lr), "--rank", str(args.rank),
            "--lora-targets", args.lora_targets,
            "--batch", str(args.batch), "--kl-beta", str(args.kl_beta),
            "--empty-agreement", str(args.empty_agreement), "--stability", args.stability,
            "--w-help", str(args.w_help), "--w-stab", str(args.w_stab), "--n-max", str(args.n_max),
            "--kl-linear-above", str(args.kl_linear_above),
            "--worker-interval-secs", "5", "--promotion", "always", "--no-arena",
            "--follow-interval-secs", "2"]
        if args.stop_kl:
            command += ["--grpo-stop-kl", str(args.stop_kl)]
        if getattr(args, "gate_rule", None):
            command += ["--quality-gate", "posted"]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
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
        self.model = call(self.base, "GET", "/v1/models")[1]["data"][0]["id"].split("@")[0]

    def ready(self):
        return call(self.base, "GET", "/ready")[1]

    def log_text(self):
        if not self.log.closed:  # also read after stop(), for the results' log tail
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


def wait_for_new_version(server, previous, timeout):
    """The version the worker trains and activates after `previous`; a failed run ends the wait."""
    offset = len(server.log_text())
    deadline = time.time() + timeout
    while time.time() < deadline:
        new_log = server.log_text()[offset:]
        if re.search(r"train run \S+ failed|trainer worker run failed", new_log):
            raise RuntimeError(f"training failed; see {server.log_path}:\n{new_log[-3000:]}")
        ready = server.ready() or {}
        if ready.get("adapter", previous) != previous and ready.get("status") == "ready":
            return ready["adapter"]
        time.sleep(3)
    raise TimeoutError("no new version in time")


# ---------------------------------------------------------------- consistency


def variant_group(args, server, version, family, seed, held_out):
    status, body = call(server.base, "POST", "/v1/variant-groups", {
        "model": f"{server.model}@{version}", "system": family["system"], "prompt": family["prompt"],
        "paraphrases": family["paraphrases"], "n": args.n, "temperature": args.temperature,
        "max_tokens": args.max_tokens, "seed": seed, "held_out": held_out})
    assert status == 201, (status, body)
    return body


def distinct_items(text):
    """The `--gate-rule distinct-items` gate: the share of an answer's items (its lines and
    sentences, list numbers and punctuation dropped, lower case) that repeat no earlier item; 0 for
    an answer with none."""
    parts = re.split(r"\n+|(?<=[.!?])\s+", text)
    items = [" ".join(re.sub(r"[^a-z0-9]+", " ", p.lower()).split()) for p in parts]
    items = [i for i in items if i and not i.isdigit()]
    return len(set(items)) / len(items) if items else 0.0


def post_gates(server, group):
    """Posts the rule gate of every answer of a training variant group."""
    rewards = [{"response_id": r["id"], "value": distinct_items(r["text"]), "source": "rule",
                "annotator": "distinct-items"} for r in group["responses"]]
    status, body = call(server.base, "POST", "/v1/rewards", {"rewards": rewards})
    assert status == 201, (status, body)
    return [w["value"] for w in rewards]


def measure_consistency(args, server, version, held_out_families, round_):
    started = time.time()
    for i, family in enumerate(held_out_families):
        variant_group(args, server, version, family, 50_000 + 100 * round_ + i, True)
    status, report = call(server.base, "GET", f"/v1/consistency?adapter={version}")
    assert status == 200, report
    report["sample_seconds"] = round(time.time() - started, 1)
    return report


def run_consistency(args):
    """Round r samples `--families-per-round` train families (taken in turn from the train split,
    so short on-policy rounds still cover every family) and waits for the worker's child; the
    held-out families are measured before round 1, every `--eval-every` rounds and after the last."""
    train, held_out = families(args.held_out, args.seed)
    train = train[:args.train_families]
    for family in train + held_out:  # once, not per request: the prompt reads the unit table
        family["system"] = system_prompt(family["kind"], args.catalogue)
    per_round = args.families_per_round or len(train)
    work = args.resume or tempfile.mkdtemp(prefix="flywheel-consistency-")
    tag = args.tag or "consistency"
    args.min_new = per_round
    server = Server(args, work, "consistency-grpo")
    results = {"setting": vars(args) | {"train_families": len(train), "held_out_families": len(held_out)},
               "rounds": []}
    try:
        version, first = 0, 1
        if args.resume:
            # Seeds depend only on the round, so rounds after a restart sample what one long run would.
            results["rounds"] = json.load(open(os.path.join(OUT, f"{tag}.json")))["rounds"]
            version, first = results["rounds"][-1]["version"], results["rounds"][-1]["round"] + 1
            assert (server.ready() or {}).get("adapter") == version, "the store's active version differs"
        elif args.base_from:
            # The base row is seeded and the same binary samples it the same way every run.
            earlier = json.load(open(args.base_from))
            for key in ("held_out", "seed", "n", "temperature", "max_tokens", "model", "catalogue"):
                assert earlier["setting"].get(key, False) == getattr(args, key), f"{args.base_from}: {key} differs"
            report = earlier["rounds"][0]["held_out"]
        else:
            report = measure_consistency(args, server, version, held_out, 0)
        if not args.resume:
            results["rounds"].append({"round": 0, "version": 0, "held_out": report})
            print(f"round 0 (base): {summary(report)}", flush=True)
            save(results, tag)
        for r in range(first, args.rounds + 1):
            started = time.time()
            gates = []
            for i in range(per_round):
                k = ((r - 1) * per_round + i) % len(train)
                group = variant_group(args, server, version, train[k], 1_000 * r + i, False)
                if args.gate_rule:
                    # Posted at once: the worker trains when the round's last group exists.
                    gates += post_gates(server, group)
            sampled = time.time() - started
            training = call(server.base, "GET", f"/v1/consistency?adapter={version}&held_out=false")[1]
            version = wait_for_new_version(server, version, args.train_timeout)
            trained = time.time() - started - sampled
            entry = {"round": r, "version": version, "train_groups_before": training,
                     "sample_seconds": round(sampled, 1), "train_seconds": round(trained, 1)}
            if gates:
                entry["mean_train_gate"] = round(sum(gates) / len(gates), 4)
            if r % args.eval_every == 0 or r == args.rounds:
                entry["held_out"] = measure_consistency(args, server, version, held_out, r)
            results["rounds"].append(entry)
            print(f"round {r} (v{version}): "
                  f"{summary(entry['held_out']) if 'held_out' in entry else 'held-out not measured'}"
                  f"  [train groups of v{version - 1}: {summary(training)}]", flush=True)
            save(results, tag)
    finally:
        server.stop()
        results["server_log_tail"] = server.log_text()[-4000:] if os.path.exists(server.log_path) else ""
        save(results, tag)


def figure(report, key, digits=3):
    """One figure of a report, or – where it is missing (reports of builds before it existed)."""
    value = report.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def summary(report):
    def f(key):
        return figure(report, key)
    return (f"entropy {f('mean_entropy')}  helpfulness {f('mean_helpfulness')}  "
            f"top share {f('mean_top_unit_share')}  named {f('answers_with_units')}  "
            f"units {f('mean_units')}  tokens {f('mean_answer_tokens')}  groups {report.get('groups')}")


# ---------------------------------------------------------------- rule reward (plain GRPO)


def rule(text, max_words=25):
    text = text.strip()
    return 1.0 if text.endswith(".") and 0 < len(text.split()) <= max_words else 0.0


TOPICS = ["photosynthesis", "gravity", "the internet", "recycling", "vaccines", "volcanoes",
          "rainbows", "electricity", "the moon", "democracy", "exercise", "sleep", "coffee",
          "bicycles", "bees", "rain", "the ocean", "money", "music", "friendship", "computers",
          "trees", "the sun", "earthquakes", "batteries", "clouds", "bread", "libraries", "email",
          "maps", "solar panels", "wind", "salt", "glaciers", "the heart", "chess", "gardening"]
# One-sentence prompts, so the base model satisfies the rule sometimes (GRPO needs groups with
# unequal rewards), but well under half the time.
TEMPLATES = ["In one sentence, explain {t}.", "Define {t} in one sentence.",
             "Briefly, why is {t} important?", "What is {t}? Answer briefly."]


def chat(server, version, prompt, n, seed, args):
    status, out = call(server.base, "POST", "/v1/chat/completions", {
        "model": f"{server.model}@{version}", "messages": [{"role": "user", "content": prompt}],
        "n": n, "seed": seed, "temperature": args.temperature, "max_tokens": args.max_tokens})
    assert status == 200, (status, out)
    return out


def run_rule(args):
    import random
    prompts = [tpl.format(t=t) for t in TOPICS for tpl in TEMPLATES]
    random.Random(args.seed).shuffle(prompts)
    held_out, train = prompts[:args.held_out_prompts], prompts[args.held_out_prompts:]
    work = tempfile.mkdtemp(prefix="flywheel-grpo-rule-")
    args.min_new = args.train_prompts
    server = Server(args, work, "grpo")
    results = {"setting": vars(args), "rounds": []}

    def pass_rate(version, round_):
        outcomes = [rule(choice["message"]["content"])
                    for i, p in enumerate(held_out)
                    for choice in chat(server, version, p, args.eval_samples, 70_000 + i, args)["choices"]]
        return sum(outcomes) / len(outcomes)

    try:
        version = 0
        rate = pass_rate(0, 0)
        results["rounds"].append({"round": 0, "version": 0, "held_out_pass_rate": rate})
        print(f"round 0 (base): held-out pass rate {rate:.3f}", flush=True)
        save(results, args.tag or "rule")
        for r in range(1, args.rounds + 1):
            batch = train[(r - 1) * args.train_prompts:r * args.train_prompts]
            posted, passed = 0, 0
            for i, prompt in enumerate(batch):
                out = chat(server, version, prompt, args.n, 2_000 * r + i, args)
                rewards = []
                for choice in out["choices"]:
                    value = rule(choice["message"]["content"])
                    passed += value
                    rewards.append({"response_id": choice["response_id"], "value": value,
                                    "source": "rule", "annotator": "ends-with-full-stop-25-words"})
                status, body = call(server.base, "POST", "/v1/rewards", {"rewards": rewards})
                assert status == 201, (status, body)
                posted += len(rewards)
            version = wait_for_new_version(server, version, args.train_timeout)
            rate = pass_rate(version, r)
            results["rounds"].append({"round": r, "version": version, "held_out_pass_rate": rate,
                                      "train_pass_rate": passed / posted})
            print(f"round {r} (v{version}): held-out pass rate {rate:.3f} "
                  f"(train samples of v{version - 1}: {passed / posted:.3f})", flush=True)
            save(results, args.tag or "rule")
    finally:
        server.stop()
        save(results, args.tag or "rule")


def save(results, tag):
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{tag}.json"), "w") as f:
        json.dump(results, f, indent=2)


def report(_args):
    lines = ["# Consistency-GRPO and GRPO benchmark (bench/consistency.py)", ""]
    for name in sorted(f for f in os.listdir(OUT) if f.startswith("consistency") and f.endswith(".json")):
        data = json.load(open(os.path.join(OUT, name)))
        s = data["setting"]
        lines += [f"Consistency-GRPO (`{name}`): {s['train_families']} train and {s['held_out_families']} "
                  f"held-out families, 5 variants × n = {s['n']} samples, T = {s['temperature']}, "
                  f"max_tokens {s['max_tokens']}; {s['steps']} steps, lr {s['lr']}, rank {s['rank']} "
                  f"on {s.get('lora_targets', 'attention')}, "
                  f"batch {s['batch']} groups, {s.get('families_per_round') or s['train_families']} families a round, "
                  f"ε_high {s.get('epsilon_high', 0.28)}, loss {s.get('loss', 'dapo')}, β = {s['kl_beta']}, "
                  f"k3 linear above {s.get('kl_linear_above', 'inf')}, stability {s.get('stability', 'jaccard')}, "
                  f"empty agreement {s.get('empty_agreement', 1.0):g}, "
                  + (f"stop KL {s['stop_kl']:g}, " if s.get('stop_kl') else "")
                  + ("the catalogue in the system prompt, " if s.get('catalogue') else "")
                  + (f"quality gate `{s['gate_rule']}` (posted rule), " if s.get('gate_rule') else "") +
                  f"w_h = {s.get('w_help', 0.3):g}, w_s = {s.get('w_stab', 0.7):g}, N_max = {s.get('n_max', 7)}.", "",
                  "| round | version | held-out entropy | change | helpfulness | units/answer | answer tokens "
                  "| top-item share | answers naming an item |",
                  "|---|---|---|---|---|---|---|---|---|"]
        base = data["rounds"][0]["held_out"]["mean_entropy"]
        for r in data["rounds"]:
            h = r.get("held_out")
            if h is None:
                continue
            change = (h["mean_entropy"] - base) / base if base else 0.0
            lines.append(f"| {r['round']} | {r['version']} | {h['mean_entropy']:.3f} | {change:+.0%} | "
                         f"{h['mean_helpfulness']:.3f} | {h['mean_units']:.2f} | {h['mean_answer_tokens']:.1f} | "
                         f"{figure(h, 'mean_top_unit_share', 2)} | {figure(h, 'answers_with_units', 2)} |")
        lines.append("")
    for name in sorted(f for f in os.listdir(OUT) if f.startswith("rule") and f.endswith(".json")):
        data = json.load(open(os.path.join(OUT, name)))
        s = data["setting"]
        lines += [f"Plain GRPO on a posted rule reward (`{name}`; ends with a full stop, ≤ 25 words): "
                  f"{s['held_out_prompts']} held-out prompts × {s.get('eval_samples', 1)} answers, "
                  f"{s['train_prompts']} train prompts a round × n = {s['n']}, {s['steps']} steps, lr {s['lr']}.", "",
                  "| round | version | held-out pass rate | pass rate of the samples trained on |", "|---|---|---|---|"]
        for r in data["rounds"]:
            train = r.get("train_pass_rate")
            lines.append(f"| {r['round']} | {r['version']} | {r['held_out_pass_rate']:.3f} | "
                         f"{'–' if train is None else f'{train:.3f}'} |")
        lines.append("")
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("consistency", "rule"):
        p = sub.add_parser(name)
        p.add_argument("--bin", default="/tmp/cgrpo/flywheel")
        p.add_argument("--model", default=MODEL_DIR)
        p.add_argument("--port", type=int, default=18660)
        p.add_argument("--tag", default=None)
        p.add_argument("--rounds", type=int, default=2)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--n", type=int, default=2 if name == "consistency" else 4)
        p.add_argument("--temperature", type=float, default=0.8)
        p.add_argument("--max-tokens", type=int, default=64 if name == "consistency" else 48)
        p.add_argument("--steps", type=int, default=16)
        p.add_argument("--lr", type=float, default=2e-4)
        p.add_argument("--rank", type=int, default=16)
        p.add_argument("--lora-targets", default="attention", choices=["attention", "all-linear"])
        p.add_argument("--batch", type=int, default=2)
        p.add_argument("--kl-beta", type=float, default=0.04)
        p.add_argument("--kl-linear-above", type=float, default=2.5,
                       help="k3 KL continues as its tangent above this log-ratio (inf: exact k3)")
        p.add_argument("--empty-agreement", type=float, default=1.0,
                       help="Jaccard(∅, ∅) in the stability reward: 1 (§5.2) or 0; with --stability "
                            "entropy, the factor on a silent answer's positive share")
        p.add_argument("--stop-kl", type=float, default=None,
                       help="--grpo-stop-kl: end a run once a batch's KL to its sampler passes this")
        p.add_argument("--stability", default="jaccard", choices=["jaccard", "loo", "entropy"])
        p.add_argument("--w-help", type=float, default=0.3, help="helpfulness weight (consistency)")
        p.add_argument("--w-stab", type=float, default=0.7, help="stability weight (consistency)")
        p.add_argument("--n-max", type=int, default=7,
                       help="units for full helpfulness in the training reward (consistency)")
        p.add_argument("--train-timeout", type=float, default=3600)
        p.add_argument("--held-out", type=int, default=10, help="held-out families (consistency)")
        p.add_argument("--catalogue", action="store_true",
                       help="consistency: each family's system prompt lists the unit table's items of its kind")
        p.add_argument("--gate-rule", default=None, choices=["distinct-items"],
                       help="consistency: post a rule's quality gate on every training answer and "
                            "train with --quality-gate posted")
        p.add_argument("--resume", default=None, metavar="DIR",
                       help="go on with an earlier run's work directory (consistency; same --tag, more --rounds)")
        p.add_argument("--base-from", default="",
                       help="take the base row from this earlier results file instead of sampling it")
        p.add_argument("--train-families", type=int, default=16)
        p.add_argument("--families-per-round", type=int, default=0,
                       help="train families sampled a round, in turn (0: all of them)")
        p.add_argument("--eval-every", type=int, default=1, help="measure held-out every E rounds")
        p.add_argument("--epsilon-high", type=float, default=0.28)
        p.add_argument("--loss", default="dapo", choices=["grpo", "bnpo", "dapo", "dr_grpo"])
        p.add_argument("--held-out-prompts", type=int, default=32)
        p.add_argument("--eval-samples", type=int, default=1,
                       help="answers per held-out prompt (rule); 1 reproduces the first run")
        p.add_argument("--train-prompts", type=int, default=24)
    sub.add_parser("report")
    args = parser.parse_args()
    {"consistency": run_consistency, "rule": run_rule, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
