#!/usr/bin/env python3
"""Train a LoRA adapter with TRL's DPOTrainer on a Flywheel `dpo` export, for `POST /v1/adapters`.

Input: the JSONL that `flywheel export --format dpo` (or `GET /v1/exports?format=dpo`) writes, one
line per judgment with a clear winner:

    {"prompt": [{"role": "user", "content": "..."}, ...],
     "chosen": [{"role": "assistant", "content": "..."}],
     "rejected": [{"role": "assistant", "content": "..."}],
     "group_id": "...", "judgment_id": "..."}

This is TRL's conversational preference format; only `prompt`, `chosen` and `rejected` are kept.

Output: a PEFT LoRA directory (`adapter_config.json` + `adapter_model.safetensors`) that the
Flywheel server accepts, i.e. that mistral.rs 0.8.1 merges exactly as trained: a plain LoRA
(`r`, numeric `lora_alpha`, `target_modules` a list of plain projection names, `bias: none`, no
DoRA / rsLoRA / rank or alpha patterns / layer subsets), whose weights file holds nothing but
`base_model.model.<layer>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r] for every layer the
targets match. The script checks that itself after saving, against the base model's safetensors
headers, and fails loudly if anything else slipped in.

Runs on CPU in float32 (the imported SmolLM2 weights are F32; bf16 autocast on CPU is off).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import struct
import sys
import tempfile
import time
from pathlib import Path

# Projections of a Llama block that mistral.rs can merge a LoRA into.
LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, type=Path, help="Flywheel `dpo` export (JSONL)")
    p.add_argument("--model", required=True, type=Path, help="base model, a local HF-format directory")
    p.add_argument("--out", required=True, type=Path, help="where to write the PEFT adapter directory")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    p.add_argument("--lr", type=float, default=5e-5, help="learning rate (default 5e-5)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r (default 8)")
    p.add_argument("--alpha", type=float, default=None, help="lora_alpha (default 2 * rank)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed for LoRA init and data order (default 0)")
    p.add_argument("--batch", type=int, default=2, help="pairs per step (default 2)")
    p.add_argument("--max-length", type=int, default=256, help="longest prompt+completion in tokens (default 256)")
    p.add_argument(
        "--targets",
        default=",".join(LLAMA_PROJECTIONS),
        help="comma-separated target modules (default: all seven Llama projections)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    return p.parse_args(argv)


def read_pairs(path: Path) -> list[dict]:
    """The export's preference pairs, reduced to TRL's conversational columns, each one checked."""
    pairs = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            for field in ("prompt", "chosen", "rejected"):
                messages = record.get(field)
                if not isinstance(messages, list) or not messages:
                    raise SystemExit(f"{path}:{number}: `{field}` is not a non-empty message list")
                for m in messages:
                    if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                        raise SystemExit(f"{path}:{number}: `{field}` holds a message without role/content")
            for field in ("chosen", "rejected"):
                if [m["role"] for m in record[field]] != ["assistant"]:
                    raise SystemExit(f"{path}:{number}: `{field}` should be one assistant message")
            pairs.append({field: record[field] for field in ("prompt", "chosen", "rejected")})
    if not pairs:
        raise SystemExit(f"{path}: no preference pairs (judge some groups with outcome a or b first)")
    return pairs


def safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a safetensors header alone."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {name: info["shape"] for name, info in header.items() if name != "__metadata__"}


def base_linear_layers(model_dir: Path) -> dict[str, tuple[int, int]]:
    """The base model's 2-D `<module>.weight` tensors and their [out, in] shapes."""
    layers = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        for name, shape in safetensors_shapes(file).items():
            if name.endswith(".weight") and len(shape) == 2:
                layers[name[: -len(".weight")]] = (shape[0], shape[1])
    return layers


def check_servable(adapter_dir: Path, model_dir: Path) -> int:
    """Fails unless the saved adapter is what the Flywheel server registers; returns the layers it changes.

    Mirrors the server's own check: a plain LORA config, targets that are plain module names of the
    base, and for every matched layer exactly a lora_A [r, in] and lora_B [out, r], nothing else.
    """
    config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    problems = []
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"peft_type is {config.get('peft_type')!r}")
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        problems.append(f"r is {rank!r}")
    if not isinstance(config.get("lora_alpha"), (int, float)):
        problems.append(f"lora_alpha is {config.get('lora_alpha')!r}")
    targets = config.get("target_modules")
    if not isinstance(targets, list) or not targets or not all(
        isinstance(t, str) and re.fullmatch(r"[A-Za-z0-9_]+", t) for t in targets
    ):
        problems.append(f"target_modules is {targets!r}, not a list of plain module names")
        targets = []
    # The server refuses the first five; the rest also change what a LoRA does, and mistral.rs 0.8.1
    # reads none of them either, so an adapter with one set would be served differently than trained.
    for field in (
        "use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform",
        "lora_bias", "fan_in_fan_out", "target_parameters", "trainable_token_indices",
        "exclude_modules", "layer_replication", "use_qalora", "alora_invocation_tokens",
    ):
        if config.get(field) not in (None, False, [], {}):
            problems.append(f"{field} is set ({config[field]!r})")
    if config.get("bias", "none") != "none":
        problems.append(f"bias is {config['bias']!r} (bias tensors are not LoRA matrices)")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save is {config['modules_to_save']!r}")

    base = base_linear_layers(model_dir)
    matched = {m: s for m, s in base.items() if any(t in m for t in targets)}
    weights = safetensors_shapes(adapter_dir / WEIGHTS_FILE)
    for module, (out_dim, in_dim) in matched.items():
        a = weights.get(f"{PEFT_PREFIX}{module}.lora_A.weight")
        b = weights.get(f"{PEFT_PREFIX}{module}.lora_B.weight")
        if a != [rank, in_dim] or b != [out_dim, rank]:
            problems.append(f"{module}: lora_A {a} / lora_B {b}, expected [{rank}, {in_dim}] / [{out_dim}, {rank}]")
    for name in weights:
        m = re.fullmatch(re.escape(PEFT_PREFIX) + r"(.+)\.lora_[AB]\.weight", name)
        if not m or m.group(1) not in matched:
            problems.append(f"unexpected tensor {name}")
    if problems:
        shown = problems[:10] + ([f"... and {len(problems) - 10} more"] if len(problems) > 10 else [])
        raise SystemExit("the saved adapter would be refused by Flywheel:\n  " + "\n  ".join(shown))
    return len(matched)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    pairs = read_pairs(args.data)
    dataset = Dataset.from_list(pairs)
    print(f"pairs: {len(pairs)} from {args.data}", flush=True)

    # The imported directory is a plain LlamaForCausalLM with F32 safetensors and a fast tokenizer;
    # load it explicitly in float32 on CPU.
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.chat_template is None:
        raise SystemExit(f"{args.model}: tokenizer has no chat template; the export is conversational")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if model.config.architectures != ["LlamaForCausalLM"]:
        print(f"warning: base model is {model.config.architectures}, not LlamaForCausalLM", file=sys.stderr)

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=args.rank,
        lora_alpha=args.alpha if args.alpha is not None else 2 * args.rank,
        lora_dropout=0.0,
        target_modules=targets,
        bias="none",
        use_dora=False,
        use_rslora=False,
    )

    scratch = tempfile.TemporaryDirectory(prefix="trl-dpo-")  # the Trainer's output_dir; nothing is kept
    config = DPOConfig(
        output_dir=scratch.name,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=args.beta,
        max_length=args.max_length,
        seed=args.seed,
        data_seed=args.seed,
        bf16=False,
        fp16=False,
        use_cpu=True,
        activation_checkpointing=False,  # transformers 5's name for gradient checkpointing
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )
    setup_s = time.monotonic() - started
    train_started = time.monotonic()
    result = trainer.train()
    train_s = time.monotonic() - train_started

    args.out.mkdir(parents=True, exist_ok=True)
    # Only the LoRA matrices: never the (tied) embeddings or other full modules.
    trainer.model.save_pretrained(str(args.out), safe_serialization=True, save_embedding_layers=False)
    scratch.cleanup()
    for name in (CONFIG_FILE, WEIGHTS_FILE):  # safetensors writes 0600; let a server under another user read it
        (args.out / name).chmod(0o644)
    layers = check_servable(args.out, args.model)

    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    margins = [row["rewards/margins"] for row in trainer.state.log_history if "rewards/margins" in row]
    accuracies = [row["rewards/accuracies"] for row in trainer.state.log_history if "rewards/accuracies" in row]
    summary = {
        "pairs": len(pairs),
        "steps": trainer.state.global_step,
        "batch": args.batch,
        "lr": args.lr,
        "beta": args.beta,
        "rank": args.rank,
        "targets": targets,
        "layers": layers,
        "seed": args.seed,
        "setup_seconds": round(setup_s, 1),
        "train_seconds": round(train_s, 1),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_mean": result.training_loss if not math.isnan(result.training_loss) else None,
        "reward_margin_last": margins[-1] if margins else None,
        "reward_accuracy_last": accuracies[-1] if accuracies else None,
        "adapter_bytes": (args.out / WEIGHTS_FILE).stat().st_size,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            name: __import__(name).__version__ for name in ("torch", "transformers", "trl", "peft", "datasets")
        },
    }
    (args.out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
