"""Base models and tokenizers the pipeline starts from.

A base named in rqa.models.OFFLINE_MODELS (e.g. "qwen2.5-coder-0.5b-instruct") is the verified GGUF
the app also serves, loaded by transformers dequantized; any other name is a Hugging Face model id.
One place (rqa.models) resolves an offline model for the app and the pipeline alike.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rqa.models import OFFLINE_MODELS, offline_model_path
from rqa.errors import UserError

# The base of the tiny preset's random model: its tokenizer and chat template are the real ones.
TINY_TOKENIZER = "qwen2.5-coder-0.5b-instruct"


def _gguf(base: str) -> Path | None:
    return offline_model_path(base, progress=False) if base in OFFLINE_MODELS else None


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    path = _gguf(base)
    tok = AutoTokenizer.from_pretrained(str(_tokenizer_folder(path))) if path else AutoTokenizer.from_pretrained(base)
    if not tok.chat_template:
        raise UserError(f"base {base} has no chat template: the fine-tune is trained and served in chat turns")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _tokenizer_folder(gguf: Path) -> Path:
    """The GGUF's tokenizer saved as transformers' files beside it, once: reading a 151k-token
    vocabulary out of the GGUF takes about 40 s on 2 cores, the saved files under a second."""
    from transformers import AutoTokenizer

    folder = gguf.with_name(f"{gguf.stem}-tokenizer")
    if not (folder / "tokenizer_config.json").is_file():
        partial = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))  # one per writer
        AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(partial))
        try:
            partial.rename(folder)
        except OSError:  # another process saved it first
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def base_config(base: str):
    from transformers import AutoConfig

    path = _gguf(base)
    return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name) if path else AutoConfig.from_pretrained(base)


def load_base_model(base: str, dtype, quantization_config=None):
    from transformers import AutoModelForCausalLM

    path = _gguf(base)
    if path is None:
        return AutoModelForCausalLM.from_pretrained(base, dtype=dtype, quantization_config=quantization_config)
    # transformers dequantizes the GGUF (Q4_K_M -> dtype); the weights are plain tensors now, and the
    # leftover GGUF quantizer marks would make the Trainer refuse to train and save_pretrained write
    # a bogus quantization_config.
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    model.hf_quantizer, model.is_quantized = None, False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if quantization_config is None:
        return model
    # transformers quantizes (bitsandbytes NF4) only while it loads a checkpoint, and a GGUF cannot be
    # loaded and quantized at once: the dequantized weights are written once as a checkpoint beside
    # the GGUF and loaded from there (the t4 recipe on an offline base, e.g. on a GPU machine)
    folder = path.with_name(f"{path.stem}-{str(dtype).removeprefix('torch.')}")
    if not (folder / "config.json").is_file():
        partial = folder.with_name(folder.name + ".partial")
        model.save_pretrained(str(partial))
        partial.rename(folder)
    del model
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, quantization_config=quantization_config)


def tiny_model(tokenizer, seed: int = 0):
    """A randomly initialised Qwen2 of a few million parameters (plus the 151k-token embedding):
    the architecture, tokenizer and chat template of the cpu and t4 presets, for CI in minutes."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return Qwen2ForCausalLM(config)
