"""One DPO optimiser step with PyTorch + PEFT: the reference side of bench/dpo_step.sh.

  make-data --model DIR --out pairs.json [--pairs 4 --prompt 128 --response 128 --seed 0]
      Seeded random token ids (special tokens excluded), so both sides train on the same data.
  run --model DIR --data pairs.json [--steps 5 --threads N]
      LoRA r=16, alpha=32 on q/k/v/o (no dropout), f32, CPU, beta 0.1, AdamW lr 5e-6, clip 1.0;
      reference log-probs once with the adapter disabled, as the candle trainer does. Prints one
      JSON line: median step time after one warm-up step, peak RSS.

Not part of CI: it needs torch, transformers and peft (bench/dpo_step.sh installs them in a venv).
"""

import argparse
import json
import random
import resource
import statistics
import time


def make_data(args):
    config = json.load(open(f"{args.model}/config.json"))
    vocab = config["vocab_size"]
    rng = random.Random(args.seed)
    ids = lambda n: [rng.randrange(3, vocab) for _ in range(n)]  # noqa: E731
    pairs = [
        {"prompt": ids(args.prompt), "chosen": ids(args.response), "rejected": ids(args.response)}
        for _ in range(args.pairs)
    ]
    json.dump({"pairs": pairs}, open(args.out, "w"))


def run(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.train()
    pairs = json.load(open(args.data))["pairs"]

    def batch():
        rows, starts = [], []
        for p in pairs:
            for r in (p["chosen"], p["rejected"]):
                rows.append(p["prompt"] + r)
                starts.append(len(p["prompt"]))
        return torch.tensor(rows), starts

    ids, starts = batch()

    def summed_logps(logits):
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token = torch.gather(logp, 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        mask = torch.zeros_like(token)
        for i, s in enumerate(starts):
            mask[i, s - 1:] = 1.0
        return (token * mask).sum(1)

    with torch.no_grad(), model.disable_adapter():
        reference = summed_logps(model(ids).logits).view(-1, 2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-6, weight_decay=0.0)
    beta, times, loss = 0.1, [], None
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        policy = summed_logps(model(ids).logits).view(-1, 2)
        ratios = (policy - reference)
        loss = -torch.nn.functional.logsigmoid(beta * (ratios[:, 0] - ratios[:, 1])).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        times.append(time.perf_counter() - started)
    print(json.dumps({
        "impl": "pytorch+peft", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "pairs": len(pairs), "step_s_median": round(statistics.median(times[1:]), 3),
        "steps": args.steps, "last_loss": round(loss.item(), 6),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make-data")
    make.add_argument("--model", required=True)
    make.add_argument("--out", required=True)
    make.add_argument("--pairs", type=int, default=4)
    make.add_argument("--prompt", type=int, default=128)
    make.add_argument("--response", type=int, default=128)
    make.add_argument("--seed", type=int, default=0)
    bench = sub.add_parser("run")
    bench.add_argument("--model", required=True)
    bench.add_argument("--data", required=True)
    bench.add_argument("--steps", type=int, default=5)
    bench.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    make_data(args) if args.command == "make-data" else run(args)


if __name__ == "__main__":
    main()
