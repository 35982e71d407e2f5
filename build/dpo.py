"""`python -m build train --method dpo`: DPO on the preference pairs of `python -m build preferences`,
on top of an SFT run (the preference loop; the SFT itself is build/train.py)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

from build.export import merge, trained_base
from build.presets import Preset, bf16_autocast, load_preset_tokenizer, lora_config
from rqa.errors import UserError


def train_dpo(preferences_dir: Path, sft_run: Path, out_dir: Path, preset: Preset, beta: float = 0.1,
              epochs: float = 1.0, log=print) -> Path:
    """DPO (TRL's DPOTrainer) on top of the SFT adapter: the SFT model (base + SFT adapter, merged)
    is the starting point and the reference; a fresh LoRA of the preset's settings learns the
    preferences. out_dir/sft-merged is the SFT model, out_dir/adapter the DPO adapter, so the export
    stage merges and quantizes it as it does an SFT run (and exports the SFT model as the baseline)."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    out_dir, sft_run = Path(out_dir), Path(sft_run)
    pairs = Path(preferences_dir) / "preferences.jsonl"
    if not pairs.is_file() or not pairs.read_text().strip():
        raise UserError(f"no preference pairs in {pairs}: run `python -m build preferences` first")
    if not (sft_run / "adapter").is_dir():
        raise UserError(f"no SFT adapter in {sft_run}/adapter: run `python -m build train` first")
    # the base the SFT run was trained on (`train --base` may have replaced the preset's), as export reads it
    preset = dataclasses.replace(preset, base=trained_base(sft_run, preset.base))
    tiny_base = sft_run / "tiny-base"
    sft = merge(sft_run / "adapter", tiny_base if tiny_base.exists() else None, preset.base, out_dir / "sft-merged")
    tokenizer = load_preset_tokenizer(preset)
    model = AutoModelForCausalLM.from_pretrained(str(sft), dtype=torch.float16 if preset.fp16 else torch.float32)
    data = load_dataset("json", data_files=str(pairs))["train"]
    args = DPOConfig(
        output_dir=str(out_dir / "checkpoints"), beta=beta, per_device_train_batch_size=preset.batch_size,
        gradient_accumulation_steps=preset.grad_accum, learning_rate=preset.dpo_lr, adam_beta1=preset.betas[0],
        adam_beta2=preset.betas[1], optim=preset.optim, warmup_steps=min(preset.warmup_steps, 2), lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": preset.min_lr}, num_train_epochs=epochs, max_steps=preset.max_steps,
        max_length=preset.max_length, fp16=preset.fp16, save_strategy="no", logging_steps=1, report_to=[],
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0, bf16=bf16_autocast(preset))
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=lora_config(preset))
    result = trainer.train()
    adapter = out_dir / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    history = trainer.state.log_history
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    metrics = {"method": "dpo", "beta": beta, "pairs": len(data), "preset": asdict(preset),
               "train_runtime_s": result.metrics.get("train_runtime"), "train_loss": result.metrics.get("train_loss"),
               "steps": trainer.state.global_step, "reward_margin_first": margins[0] if margins else None,
               "reward_margin_last": margins[-1] if margins else None}
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    log(f"DPO adapter -> {adapter}; reward margin {metrics['reward_margin_first']} -> {metrics['reward_margin_last']}")
    return adapter
