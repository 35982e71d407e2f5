"""`python -m build train`: LoRA / QLoRA supervised fine-tuning with TRL's SFTTrainer and peft.

Presets:
  t4    the seed's recipe: Qwen2.5-3B-Instruct in 4-bit NF4 with double quantization and fp16
        compute; LoRA r=16, alpha=64 on q/k/v/o, dropout 0.05; batch 4 x gradient accumulation 8,
        lr 2.5e-5, AdamW betas (0.9, 0.98), 500 warm-up steps, cosine to 1e-6, max length 4096,
        paged AdamW 8-bit, 5 epochs with early stopping on validation loss. One change, in every
        preset: bias "none" instead of the seed's "lora_only", which trains the q/k/v biases; a GGUF
        LoRA adapter cannot carry bias deltas, and on a GPU bitsandbytes' 4-bit layers cast those
        biases to fp16 on every forward, so that fp16 training stopped at its first step ("Attempting
        to unscale FP16 gradients"). And the adapters train in fp32 (TRL makes
        QLoRA adapters bf16, whose gradients fp16's scaler cannot unscale). Measured on a GPU
        (docs/BENCHMARKS.md): the 3B shape at 4 x 4096 tokens peaks at 10.0 GiB reserved, inside a
        16 GB T4; the real 1.5B weights train 20 steps with finite fp16 losses.
  cpu   the same LoRA on the same model family: Qwen2.5-Coder-0.5B-Instruct from the offline GGUF
        (dequantized to fp32 weights; TRL's SFTConfig computes in bf16 autocast by default, and
        train_metrics.json records the mode that ran), so target modules, chat template and export
        path are the t4 preset's.
        Dropout 0.1 and betas (0.9, 0.95) as the issue's recipe asks; lr 2e-4 because 2.5e-5 barely
        moves in a few dozen steps; batch 1 x 4 accumulation because the app's prompt with five sources is
        about 900 tokens (max length 1280 keeps the longest whole); two passes over the data with the
        t4 preset's early stopping on validation loss. Two passes instead of one won the one
        column one pass tied (dev fact accuracy at q4_0, 0.60 -> 0.70) at 25 more minutes
        (docs/BENCHMARKS.md, fifth cpu run). No gradient checkpointing: a batch of 1 x 1280 tokens
        keeps about 4 GB of activations, which RAM holds, and recomputing them costs time.
  tiny  a randomly initialised Qwen2 with the real tokenizer and chat template, for CI.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from build.models import TINY_TOKENIZER, base_config, load_base_model, load_tokenizer, tiny_model


@dataclass(frozen=True)
class Preset:
    name: str
    base: str
    load_in_4bit: bool = False
    fp16: bool = False
    lora_r: int = 16
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    # "none" in every preset, not the seed's "lora_only": the app serves the adapter as a GGUF LoRA
    # adapter, which holds low-rank A/B pairs only (llama.cpp's converter refuses bias tensors)
    lora_bias: str = "none"
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    batch_size: int = 4
    grad_accum: int = 8
    lr: float = 2.5e-5
    # DPO moves log-probability ratios and overshoots at SFT rates: published LoRA DPO recipes use
    # 5e-6 to 5e-5 where their SFT uses 2e-4 (the cpu preset takes the top: it runs only 10 steps)
    dpo_lr: float = 5e-6
    min_lr: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 500
    max_length: int = 4096
    epochs: float = 5
    max_steps: int = -1
    early_stopping_patience: int = 1
    optim: str = "adamw_torch"
    gradient_checkpointing: bool = True  # recompute activations in backward: memory for time
    checkpoints: bool = True  # evaluation, checkpoints and early stopping (off only to time the loop itself)
    needs_gpu: bool = False


PRESETS = {
    "t4": Preset("t4", "Qwen/Qwen2.5-3B-Instruct", load_in_4bit=True, fp16=True, optim="paged_adamw_8bit",
                 needs_gpu=True),
    "cpu": Preset("cpu", "qwen2.5-coder-0.5b-instruct", lora_dropout=0.1, betas=(0.9, 0.95), batch_size=1,
                  grad_accum=4, lr=2e-4, dpo_lr=5e-5, warmup_steps=2, max_length=1280, epochs=2,
                  gradient_checkpointing=False),
    "tiny": Preset("tiny", "tiny-random-qwen2", batch_size=2, grad_accum=1, lr=1e-3, warmup_steps=2, max_length=1280,
                   epochs=2, max_steps=12),  # 1280: the app's prompt with five sources is about 900 tokens
}


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
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig, EarlyStoppingCallback
    from trl import SFTConfig

    out_dir = Path(out_dir)
    tokenizer = load_tokenizer(TINY_TOKENIZER if preset.base.startswith("tiny") else preset.base)
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

    # evaluation and checkpoints four times a run: on the cpu preset they cost a few % of its time
    cadence = "epoch" if preset.max_steps < 0 else "steps"
    every = None if preset.max_steps < 0 else max(1, preset.max_steps // 4)
    files = {split: str(Path(data_dir) / f"{split}.jsonl") for split in ("train", "val")}
    data = load_dataset("json", data_files=files).map(_to_prompt_completion, remove_columns=["messages"])
    args = SFTConfig(
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
        completion_only_loss=True, gradient_checkpointing=preset.gradient_checkpointing, seed=0)
    peft_config = LoraConfig(r=preset.lora_r, lora_alpha=preset.lora_alpha, lora_dropout=preset.lora_dropout,
                             bias=preset.lora_bias, target_modules=list(preset.target_modules), task_type="CAUSAL_LM")
    trainer = _sft_trainer_class()(model=model, args=args, train_dataset=data["train"], eval_dataset=data["val"],
                         processing_class=tokenizer, peft_config=peft_config,
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
    if torch.cuda.is_available():  # the process's peak: what decides whether a recipe fits a card
        metrics["gpu"] = torch.cuda.get_device_name(0)
        metrics["peak_vram_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        metrics["peak_vram_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=1))
    (out_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    plot_loss(history, out_dir / "loss.png")
    log(f"adapter -> {adapter}; loss curve -> {out_dir / 'loss.png'}")
    return adapter


def train_dpo(preferences_dir: Path, sft_run: Path, out_dir: Path, preset: Preset, beta: float = 0.1,
              log=print) -> Path:
    """DPO (TRL's DPOTrainer) on top of the SFT adapter: the SFT model (base + SFT adapter, merged)
    is the starting point and the reference; a fresh LoRA of the preset's settings learns the
    preferences. out_dir/sft-merged is the SFT model, out_dir/adapter the DPO adapter, so the export
    stage merges and quantizes it as it does an SFT run (and exports the SFT model as the baseline)."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from build.export import merge

    out_dir, sft_run = Path(out_dir), Path(sft_run)
    pairs = Path(preferences_dir) / "preferences.jsonl"
    if not pairs.is_file() or not pairs.read_text().strip():
        raise ValueError(f"no preference pairs in {pairs}: run `python -m build preferences` first")
    if not (sft_run / "adapter").is_dir():
        raise ValueError(f"no SFT adapter in {sft_run}/adapter: run `python -m build train` first")
    tiny_base = sft_run / "tiny-base"
    sft = merge(sft_run / "adapter", tiny_base if tiny_base.exists() else None, preset.base, out_dir / "sft-merged")
    tokenizer = load_tokenizer(TINY_TOKENIZER if preset.base.startswith("tiny") else preset.base)
    model = AutoModelForCausalLM.from_pretrained(str(sft), dtype=torch.float16 if preset.fp16 else torch.float32)
    data = load_dataset("json", data_files=str(pairs))["train"]
    args = DPOConfig(
        output_dir=str(out_dir / "checkpoints"), beta=beta, per_device_train_batch_size=preset.batch_size,
        gradient_accumulation_steps=preset.grad_accum, learning_rate=preset.dpo_lr, adam_beta1=preset.betas[0],
        adam_beta2=preset.betas[1], optim=preset.optim, warmup_steps=min(preset.warmup_steps, 2), lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr": preset.min_lr}, num_train_epochs=1, max_steps=preset.max_steps,
        max_length=preset.max_length, fp16=preset.fp16, save_strategy="no", logging_steps=1, report_to=[],
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, seed=0)
    peft_config = LoraConfig(r=preset.lora_r, lora_alpha=preset.lora_alpha, lora_dropout=preset.lora_dropout,
                             bias=preset.lora_bias, target_modules=list(preset.target_modules), task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)
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


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    ckpts = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return ckpts[-1] if ckpts else None


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


def preset_with(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
