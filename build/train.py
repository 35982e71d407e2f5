"""`python -m build train`: LoRA / QLoRA supervised fine-tuning with TRL's SFTTrainer and peft.

The recipes are the presets of build/presets.py (t4: the seed's QLoRA on a T4; cpu: the same LoRA on
a 0.5B model; tiny: a random model for CI); `--method dpo` trains on preference pairs on top of an
SFT run instead (build/dpo.py). A run refuses, before loading weights, a preset whose estimated
memory does not fit (check_fits), resumes from its last checkpoint, and writes the adapter,
train_metrics.json, log_history.json and a loss curve.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from build.models import base_config, load_base_model, tiny_model
from build.presets import Preset, bf16_autocast, load_preset_tokenizer, lora_config, preset_with
from rqa.errors import UserError


class MemoryError_(RuntimeError):
    """The configuration cannot fit: raised before any weights are loaded."""


def check_fits(preset: Preset, n_params: int, hidden: int, layers: int, vocab: int) -> str:
    """Estimate training memory from the config alone and refuse what cannot fit."""
    import psutil
    import torch

    weight_bytes = n_params * (0.55 if preset.load_in_4bit else (2 if preset.fp16 else 4))
    tokens = preset.batch_size * preset.max_length
    width = 2 if preset.fp16 else 4
    # backward keeps ~34 values per hidden unit per layer, or with gradient checkpointing each layer's
    # input and one layer recomputed at a time; the logits are the big term at a 152k vocabulary.
    # Checked on a GPU: the t4 preset on the 3B shape at 4 x 4096 tokens reserved 10.0 GiB, this says
    # 10.7 (docs/BENCHMARKS.md)
    kept = hidden * (layers + 34) if preset.gradient_checkpointing else 34 * hidden * layers
    act_bytes = tokens * (kept + vocab) * width
    lora_bytes = 16 * preset.lora_r * hidden * len(preset.target_modules) * layers * 2  # weights + Adam
    need = weight_bytes + act_bytes + lora_bytes
    if preset.needs_gpu or torch.cuda.is_available():
        if not torch.cuda.is_available():
            raise MemoryError_(f"preset {preset.name} needs a CUDA GPU (about {need / 2**30:.1f} GiB estimated); "
                               "none is visible. Use --preset cpu or tiny here.")
        have, where = torch.cuda.get_device_properties(0).total_memory, "GPU memory"
    else:
        have, where = psutil.virtual_memory().available, "free RAM"
    if need > 0.9 * have:
        raise MemoryError_(f"preset {preset.name} needs about {need / 2**30:.1f} GiB but only {have / 2**30:.1f} GiB "
                           f"of {where} is available (weights {weight_bytes / 2**30:.1f}, activations "
                           f"{act_bytes / 2**30:.1f} GiB for batch {preset.batch_size} x {preset.max_length} tokens). "
                           "Lower --batch-size or --max-length.")
    return f"estimated {need / 2**30:.2f} GiB of {have / 2**30:.1f} GiB {where}"


def _to_prompt_completion(row: dict) -> dict:
    # TRL trains on the completion only for prompt/completion data: the loss covers the answer.
    return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}


def _sft_trainer_class():
    """TRL's SFTTrainer, with the loss computed from the completion positions' logits on a CPU.

    TRL 1.16 computes the loss through a fused, tiled LM head. With Triton (CUDA) it scores only the
    positions that have a label; without it, every position, in fp32 torch tiles that are
    recomputed in backward: profiled on the cpu preset, 68 % of a training step. On a CPU this takes
    the model's own LM head on the completion positions only (`logits_to_keep` as a mask) and the
    same loss (summed token NLL over `num_items_in_batch`). The loop, data, masks, schedule,
    evaluation and checkpoints stay TRL's; on a GPU nothing changes."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class CompletionLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.args.device.type != "cpu" or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            targets = inputs["labels"][:, 1:]
            scored = F.pad(targets != -100, (0, 1))  # position t predicts token t + 1
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                           logits_to_keep=scored, use_cache=False).logits
            logits = logits.reshape(-1, logits.shape[-1])  # one row per scored position
            wanted = targets[scored[:, :-1]]
            count = num_items_in_batch if num_items_in_batch is not None else wanted.numel()
            loss = F.cross_entropy(logits.float(), wanted, reduction="sum") / torch.as_tensor(count).clamp(min=1)
            mode = "train" if model.training else "eval"
            # the bookkeeping TRL's own compute_loss keeps: tokens seen (train_metrics.json's tokens/s), accuracy
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum())
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            self._metrics[mode]["mean_token_accuracy"].append((logits.argmax(-1) == wanted).float().mean().item())
            return loss

    return CompletionLossSFTTrainer


def train(data_dir: Path, out_dir: Path, preset: Preset, log=print, callbacks=()) -> Path:
    import torch
    from datasets import load_dataset
    from transformers import EarlyStoppingCallback

    out_dir = Path(out_dir)
    files = {split: str(Path(data_dir) / f"{split}.jsonl") for split in ("train", "val")}
    for split, path in files.items():  # before minutes of model loading, not a datasets traceback after
        if not Path(path).is_file() or not Path(path).read_text().strip():
            raise UserError(f"{path} holds no examples: the {split} split is empty (too few validated "
                            "questions, or too few papers); extend the dataset stage's output first")
    model, tokenizer = _model_and_tokenizer(preset, out_dir, log)
    data = load_dataset("json", data_files=files).map(_to_prompt_completion, remove_columns=["messages"])
    trainer = _sft_trainer_class()(model=model, args=_sft_config(preset, out_dir), train_dataset=data["train"],
                                   eval_dataset=data["val"], processing_class=tokenizer, peft_config=lora_config(preset),
                                   callbacks=[*([EarlyStoppingCallback(early_stopping_patience=preset.early_stopping_patience)]
                                                if preset.checkpoints else []), *callbacks])
    if preset.fp16 and preset.load_in_4bit:
        # TRL casts QLoRA adapters to bf16 (the QLoRA paper's choice), but fp16's gradient scaler cannot
        # unscale bf16 gradients and a T4 has no bf16: the adapters train in fp32 under fp16 autocast
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    last = _last_checkpoint(out_dir / "checkpoints")
    if last:
        log(f"resuming from {last}")
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    adapter = out_dir / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    history = trainer.state.log_history
    metrics = _run_metrics(preset, result, trainer)
    if torch.cuda.is_available():  # the process's peak: what decides whether a recipe fits a card
        metrics["gpu"] = torch.cuda.get_device_name(0)
        metrics["peak_vram_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        metrics["peak_vram_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    plot_loss(history, out_dir / "loss.png")
    log(f"adapter -> {adapter}; loss curve -> {out_dir / 'loss.png'}")
    return adapter


def _model_and_tokenizer(preset: Preset, out_dir: Path, log=print):
    """The base to train and its tokenizer, once check_fits has found room for the run (from the
    config alone, before any real weights are loaded); the tiny preset's random base is saved to
    out_dir/tiny-base, which export merges into."""
    import torch
    from transformers import BitsAndBytesConfig

    tokenizer = load_preset_tokenizer(preset)
    if preset.base.startswith("tiny"):
        model = tiny_model(tokenizer)
        model.save_pretrained(str(out_dir / "tiny-base"))  # export merges into this untrained base
        tokenizer.save_pretrained(str(out_dir / "tiny-base"))
        cfg = model.config
        n_params = sum(p.numel() for p in model.parameters())
    else:
        cfg = base_config(preset.base)
        cfg = getattr(cfg, "text_config", cfg)
        with torch.device("meta"):
            from transformers import AutoModelForCausalLM
            n_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
        model = None
    log(check_fits(preset, n_params, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size))
    if model is None:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.float16) if preset.load_in_4bit else None
        model = load_base_model(preset.base, torch.float16 if preset.fp16 else torch.float32, quant)
    return model, tokenizer


def _sft_config(preset: Preset, out_dir: Path):
    import torch
    from trl import SFTConfig

    # evaluation and checkpoints each epoch, every save_every steps, or four times a run of max_steps:
    # on the cpu preset they cost a few % of its time
    cadence = "epoch" if preset.max_steps < 0 and not preset.save_every else "steps"
    every = preset.save_every or (None if preset.max_steps < 0 else max(1, preset.max_steps // 4))
    return SFTConfig(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=preset.batch_size,
        per_device_eval_batch_size=preset.batch_size, gradient_accumulation_steps=preset.grad_accum,
        learning_rate=preset.lr, adam_beta1=preset.betas[0], adam_beta2=preset.betas[1], optim=preset.optim,
        warmup_steps=preset.warmup_steps, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": preset.min_lr}, num_train_epochs=preset.epochs, max_steps=preset.max_steps,
        max_length=preset.max_length, fp16=preset.fp16, eval_strategy=cadence if preset.checkpoints else "no",
        eval_steps=every, save_strategy=cadence if preset.checkpoints else "no", save_steps=every,
        save_total_limit=2, load_best_model_at_end=preset.checkpoints, metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=1, report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        completion_only_loss=True, gradient_checkpointing=preset.gradient_checkpointing, seed=0,
        bf16=bf16_autocast(preset))


def _run_metrics(preset: Preset, result, trainer) -> dict:
    """train_metrics.json: the recipe, losses, steps and throughput of the run."""
    history = trainer.state.log_history
    metrics = {"preset": asdict(preset), "train_runtime_s": result.metrics.get("train_runtime"),
               "train_loss": result.metrics.get("train_loss"), "steps": trainer.state.global_step,
               "tokens": max((h.get("num_tokens", 0) for h in history), default=0),
               "eval_loss": min((h["eval_loss"] for h in history if "eval_loss" in h), default=None),
               # what actually ran (a precision setting can be asked for and not take effect)
               "mixed_precision": trainer.accelerator.mixed_precision}
    if metrics["train_runtime_s"]:
        metrics["tokens_per_s"] = metrics["tokens"] / metrics["train_runtime_s"] if metrics["tokens"] else None
        # what the evaluation cadence costs (checkpoints of a LoRA adapter are a few MB)
        metrics["eval_runtime_s"] = sum(h.get("eval_runtime", 0) for h in history)
        loop_s = metrics["train_runtime_s"] - metrics["eval_runtime_s"]
        metrics["loop_tokens_per_s"] = metrics["tokens"] / loop_s if metrics["tokens"] and loop_s > 0 else None
    return metrics


def _last_checkpoint(folder: Path) -> Path | None:
    """The newest whole checkpoint. The Trainer writes trainer_state.json last, so a checkpoint
    without it was cut short (a run stopped while saving) and would fail every resume."""
    if not folder.is_dir():
        return None
    ckpts = [p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").is_file()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


def plot_loss(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("SFT loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cli(args) -> dict:
    """`python -m build train`: SFT on a dataset, or with --method dpo, DPO on top of an SFT run (build/dpo.py)."""
    preset = preset_with(args.preset, base=args.base, max_steps=args.max_steps, batch_size=args.batch_size,
                         max_length=args.max_length, epochs=args.epochs, save_every=args.save_every)
    if args.method == "dpo":
        from build.dpo import train_dpo

        if not args.preferences or not args.sft:
            raise UserError("--method dpo needs --preferences DIR and --sft RUN (the SFT train --out)")
        if args.save_every:  # a DPO run is one short pass that starts again: it keeps no checkpoints
            raise UserError("--save-every applies to SFT runs; a DPO run keeps no checkpoints")
        train_dpo(args.preferences, args.sft, args.out, preset, epochs=args.epochs or 1.0)
    else:
        if not args.data:
            raise UserError("--method sft needs --data DIR")
        train(args.data, args.out, preset)
    return json.loads((Path(args.out) / "train_metrics.json").read_text())
