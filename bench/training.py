"""Training throughput: TRL's SFTTrainer (rqa's `build train`) vs a plain transformers + peft loop,
same model (the cpu preset's Qwen2.5-Coder-0.5B from the offline GGUF), same LoRA, same data, same batch and length.

    .venv/bin/python bench/training.py --data OUT/data [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from build.models import load_base_model, load_tokenizer  # noqa: E402
from build.train import PRESETS, preset_with, train  # noqa: E402


def plain_loop(data: Path, steps: int, batch: int, max_length: int, bf16: bool, gradient_checkpointing: bool) -> float:
    import torch
    from peft import LoraConfig, get_peft_model

    cfg = PRESETS["cpu"]
    tok = load_tokenizer(cfg.base)
    model = get_peft_model(load_base_model(cfg.base, torch.float32),
                           LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                      bias=cfg.lora_bias, target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas)
    model.train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    # timed from the first step, as TRL's train_runtime is (its first step includes the warm-up too)
    tokens, t0 = 0, time.perf_counter()
    for step in range(steps):
        enc = tok([texts[(step * batch + i) % len(texts)] for i in range(batch)], return_tensors="pt", padding=True,
                  truncation=True, max_length=max_length)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the precision the TRL run used
            loss = model(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        tokens += int(enc.attention_mask.sum())
    return tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    # no evaluation, checkpoints or early stopping: the training loop itself is compared
    preset = preset_with("cpu", max_steps=args.steps, grad_accum=1, warmup_steps=1, checkpoints=False)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"  # the same train split; a 4-example val keeps evaluation time small
        data.mkdir()
        (data / "train.jsonl").write_text((args.data / "train.jsonl").read_text())
        (data / "val.jsonl").write_text("".join((args.data / "val.jsonl").read_text().splitlines(True)[:4]))
        train(data, Path(tmp) / "run", preset)
        trl = json.loads((Path(tmp) / "run" / "train_metrics.json").read_text())
    trl_rate, precision = trl["loop_tokens_per_s"], trl["mixed_precision"]
    plain = plain_loop(args.data, args.steps, preset.batch_size, preset.max_length, bf16=precision == "bf16",
                       gradient_checkpointing=preset.gradient_checkpointing)
    print(f"\n| loop | tokens/s |\n|---|---|\n| TRL SFTTrainer (build train) | {trl_rate:.0f} |"
          f"\n| plain transformers + peft | {plain:.0f} |")
    print(f"\nbatch {preset.batch_size}, max length {preset.max_length}, {args.steps} optimizer steps each, fp32 weights "
          f"with mixed precision {precision!r} in both, gradient checkpointing "
          f"{'on' if preset.gradient_checkpointing else 'off'} in both, on CPU, "
          f"no evaluation or checkpoints in either; TRL / plain = {trl_rate / plain:.3f}")


if __name__ == "__main__":
    main()
