"""Training presets: the recipe `python -m build train --preset` runs, which export and evaluate read too.

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
        (dequantized to fp32 weights; bf16 autocast where the CPU has bf16 instructions, fp32
        where it would be emulated, and train_metrics.json records the mode that ran), so target
        modules, chat template and export path are the t4 preset's.
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

from dataclasses import dataclass, replace
from rqa.errors import UserError


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
    # optimizer steps between evaluation + checkpoint; 0: each epoch, or four times a run of max_steps.
    # A long CPU run sets it so that a stopped run resumes near where it stopped and each checkpoint
    # is a measurable adapter (25 steps of 1 x 4 are 100 examples)
    save_every: int = 0
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


def preset_with(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


def lora_config(preset: Preset):
    """peft's LoraConfig of the preset: SFT and DPO train adapters of the same shape."""
    from peft import LoraConfig

    return LoraConfig(r=preset.lora_r, lora_alpha=preset.lora_alpha, lora_dropout=preset.lora_dropout,
                      bias=preset.lora_bias, target_modules=list(preset.target_modules), task_type="CAUSAL_LM")


def bf16_autocast(preset: Preset) -> bool | None:
    """The `bf16` argument of TRL's SFT and DPO configs. None on a GPU or under fp16: TRL's default
    (bf16 autocast where fp16 is off). On a CPU, bf16 only where the CPU computes it in hardware
    (AVX-512 BF16 or AMX); elsewhere it is emulated, and a tiny-preset step took 20 s against 1 s in
    fp32 on an AVX2-only CPU."""
    import torch

    if torch.cuda.is_available() or preset.fp16:
        return None
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def load_preset_tokenizer(preset: Preset):
    """The base's tokenizer; the tiny preset's random model has the real one of TINY_TOKENIZER."""
    from build.models import TINY_TOKENIZER, load_tokenizer

    return load_tokenizer(TINY_TOKENIZER if preset.base.startswith("tiny") else preset.base)
