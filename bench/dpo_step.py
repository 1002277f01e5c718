"""One DPO optimiser step with PyTorch + PEFT: the reference side of bench/dpo_step.sh.

  make-data --model DIR --out pairs.json [--pairs 4 --prompt 128 --response 128 --seed 0]
      Seeded random token ids (special tokens excluded), so both sides train on the same data.
      Standard library only (it reads the model's config.json), so it runs without torch.
  run --model DIR --data pairs.json [--steps 5 --threads N --device cpu|cuda --dtype f32|bf16]
      LoRA r=16, alpha=32 on q/k/v/o (no dropout), beta 0.1, AdamW lr 5e-6, clip 1.0; reference
      log-probs once with the adapter disabled, as the candle trainer does. Default f32 on CPU.
      Prints one JSON line: median step time after one warm-up step, peak RSS, and on CUDA the
      peak memory PyTorch allocated and the device memory in use (total - free, the largest of
      the samples taken after each step), in MiB; CUDA steps are timed between synchronizations.

Not part of CI: `run` needs torch, transformers and peft (bench/dpo_step.sh installs them in a
venv; bench/gpu_check.py uses them where they are installed).
"""

import argparse
import json
import random
import resource
import statistics
import time

MIB = 1024 * 1024


def write_pairs(model, out, pairs=4, prompt=128, response=128, seed=0):
    """Writes {"pairs": [{"prompt", "chosen", "rejected"}, ...]} of seeded random token ids below
    the model's vocab_size, skipping ids 0-2 (the special tokens)."""
    with open(f"{model}/config.json") as f:
        vocab = json.load(f)["vocab_size"]
    rng = random.Random(seed)

    def ids(n):
        return [rng.randrange(3, vocab) for _ in range(n)]

    data = [{"prompt": ids(prompt), "chosen": ids(response), "rejected": ids(response)} for _ in range(pairs)]
    with open(out, "w") as f:
        json.dump({"pairs": data}, f)


def make_data(args):
    write_pairs(args.model, args.out, args.pairs, args.prompt, args.response, args.seed)


def run(args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    # transformers 4.56 renamed `torch_dtype` to `dtype`; an unknown keyword would be ignored.
    import transformers
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    base = AutoModelForCausalLM.from_pretrained(args.model, **{dtype_key: dtype}).to(device)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    model.train()
    with open(args.data) as f:
        pairs = json.load(f)["pairs"]

    def batch():
        rows, starts = [], []
        for p in pairs:
            for r in (p["chosen"], p["rejected"]):
                rows.append(p["prompt"] + r)
                starts.append(len(p["prompt"]))
        return torch.tensor(rows, device=device), starts

    ids, starts = batch()

    def summed_logps(logits):
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        token = torch.gather(logp, 2, ids[:, 1:].unsqueeze(2)).squeeze(2)
        mask = torch.zeros_like(token)
        for i, s in enumerate(starts):
            mask[i, s - 1:] = 1.0
        return (token * mask).sum(1)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def device_used_mib():
        free, total = torch.cuda.mem_get_info(device)
        return (total - free) / MIB

    with torch.no_grad(), model.disable_adapter():
        reference = summed_logps(model(ids).logits).view(-1, 2)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-6, weight_decay=0.0)
    beta, times, loss, used = 0.1, [], None, []
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.steps + 1):
        sync()
        started = time.perf_counter()
        policy = summed_logps(model(ids).logits).view(-1, 2)
        ratios = (policy - reference)
        loss = -torch.nn.functional.logsigmoid(beta * (ratios[:, 0] - ratios[:, 1])).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sync()
        times.append(time.perf_counter() - started)
        if cuda:
            used.append(device_used_mib())
    result = {
        "impl": "pytorch+peft", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": args.device, "dtype": args.dtype,
        "pairs": len(pairs), "step_s_median": round(statistics.median(times[1:]), 3),
        "steps": args.steps, "last_loss": round(loss.item(), 6),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "gpu_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / MIB) if cuda else None,
        "gpu_used_mib": round(max(used)) if cuda else None,
    }
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(result))


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
    bench.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bench.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = parser.parse_args()
    make_data(args) if args.command == "make-data" else run(args)


if __name__ == "__main__":
    main()
