"""Training throughput: TRL's SFTTrainer (rqa's `build train`) vs a plain transformers + peft loop,
same model (the cpu preset's Qwen2.5-Coder-0.5B from the offline GGUF), same LoRA, same data, same batch and length.

    .venv/bin/python -m bench.training --data OUT/data [--steps 8]

Each loop's first step is left out of its timing (one-time kernel and allocator warm-up).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


from build.models import load_base_model, load_tokenizer
from build.presets import PRESETS, preset_with
from build.train import train
from transformers import TrainerCallback


class AfterFirstStep(TrainerCallback):
    """Times TRL's loop from the end of its first step, like the plain loop: the
    first step of either pays for one-time kernel and allocator warm-up, a large share of a few steps."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        seen = [h["num_tokens"] for h in state.log_history if "num_tokens" in h and "loss" in h]
        self.rate = (seen[-1] - seen[0]) / (time.perf_counter() - self.start)


def plain_loop(data: Path, steps: int, batch: int, max_length: int, bf16: bool, gradient_checkpointing: bool,
               answer_logits_only: bool = False) -> float:
    """The textbook loop: labels on the answer tokens, the model's own loss over every position's
    logits; or (answer_logits_only) the LM head on the answer positions only, as build train does on a CPU."""
    import torch
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    cfg = PRESETS["cpu"]
    tok = load_tokenizer(cfg.base)
    model = get_peft_model(load_base_model(cfg.base, torch.float32),
                           LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                      bias=cfg.lora_bias, target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    prompt_tokens = [len(tok(tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True))
                         .input_ids) for r in rows]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas)
    model.train()
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    tokens, t0 = 0, None
    for step in range(steps + 1):  # step 0 is a warm-up, not timed (nor is TRL's first step)
        if step == 1:
            tokens, t0 = 0, time.perf_counter()
        picked = [(step * batch + i) % len(texts) for i in range(batch)]
        enc = tok([texts[j] for j in picked], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        for row, j in enumerate(picked):  # right padding: the prompt is each row's start
            labels[row, :prompt_tokens[j]] = -100
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # the precision the TRL run used
            if answer_logits_only:
                keep = F.pad(labels[:, 1:] != -100, (0, 1))
                logits = model(**enc, logits_to_keep=keep).logits
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:][keep[:, :-1]])
            else:
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
    preset = preset_with("cpu", max_steps=args.steps + 1, grad_accum=1, warmup_steps=1, checkpoints=False)
    clock = AfterFirstStep()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"  # the same train split; a 4-example val keeps evaluation time small
        data.mkdir()
        (data / "train.jsonl").write_text((args.data / "train.jsonl").read_text())
        (data / "val.jsonl").write_text("".join((args.data / "val.jsonl").read_text().splitlines(True)[:4]))
        train(data, Path(tmp) / "run", preset, callbacks=[clock])
        trl = json.loads((Path(tmp) / "run" / "train_metrics.json").read_text())
    trl_rate, precision = clock.rate, trl["mixed_precision"]
    same = dict(bf16=precision == "bf16", gradient_checkpointing=preset.gradient_checkpointing)
    plain = plain_loop(args.data, args.steps, preset.batch_size, preset.max_length, **same)
    plain_answer = plain_loop(args.data, args.steps, preset.batch_size, preset.max_length, answer_logits_only=True, **same)
    print(f"\n| loop | tokens/s |\n|---|---|\n| TRL SFTTrainer (build train) | {trl_rate:.0f} |"
          f"\n| plain transformers + peft, the model's loss (logits of every position) | {plain:.0f} |"
          f"\n| plain transformers + peft, logits of the answer positions only | {plain_answer:.0f} |")
    print(f"\nbatch {preset.batch_size}, max length {preset.max_length}, {args.steps} timed optimizer steps each "
          f"after a warm-up step, fp32 weights "
          f"with mixed precision {precision!r} in both, gradient checkpointing "
          f"{'on' if preset.gradient_checkpointing else 'off'} in both, on CPU, "
          f"no evaluation or checkpoints in either; TRL / plain = {trl_rate / plain:.3f}, "
          f"TRL / plain with the same loss computation = {trl_rate / plain_answer:.3f}")


if __name__ == "__main__":
    main()
