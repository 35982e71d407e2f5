"""Random-weight stand-ins of the t4 preset's bases, for timing and memory of the recipe on a GPU machine
that cannot download the real weights (and cannot receive the 1 GB GGUF: bench/t4_recipe.sh).

Throughput and memory depend on the shapes, not on the values, so a model built from the real config
with random weights trains at the speed and in the memory of the real one (its loss means nothing).

    python -m bench.random_base shape OUT/coder-1.5b --gguf qwen2.5-coder-1.5b-instruct   # here: config + tokenizer
    python -m bench.random_base shape OUT/qwen2.5-3b --qwen25-3b --tokenizer OUT/coder-1.5b
    python -m bench.random_base long-data DATA OUT/long --tokenizer OUT/coder-1.5b         # prompts near 4096 tokens
    python -m bench.random_base weights OUT/coder-1.5b /tmp/base-1.5b                     # there: fp16 random weights
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


# Qwen/Qwen2.5-3B-Instruct's config.json (the t4 preset's base), the fields that set shapes
QWEN25_3B = dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                 rms_norm_eps=1e-6, tie_word_embeddings=True)


def shape(out: Path, gguf: str | None, tokenizer: Path | None) -> None:
    from transformers import AutoTokenizer, Qwen2Config

    from build.models import base_config, load_tokenizer

    if gguf:  # the pipeline's own resolution of an offline model
        cfg, tok = base_config(gguf), load_tokenizer(gguf)
    else:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))  # the Qwen2.5 family shares one tokenizer
        cfg = Qwen2Config(**QWEN25_3B, bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
    cfg.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def weights(shape_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(shape_dir)), dtype=torch.float16)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(shape_dir)).save_pretrained(str(out))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters -> {out}")


def long_data(data: Path, out: Path, tokenizer: Path, target: int = 4080, n: int = 48) -> None:
    """The app's prompts with more sources prepended, up to `target` tokens: the recipe's 4096-token worst case."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines() if line.strip()]

    def length(msgs):
        return len(tok(tok.apply_chat_template(msgs, tokenize=False)).input_ids)

    def example(row, sources):
        system, user, answer = row["messages"]
        return [system, {"role": "user", "content": "\n\n".join([*sources, user["content"]])}, answer]

    made = []
    for i in range(n):
        row, sources = rows[i % len(rows)], []
        for j in range(i + 1, i + 1 + len(rows)):
            more = rows[j % len(rows)]["messages"][1]["content"].split("\n\nQuestion")[0]
            if length(example(row, [*sources, more])) > target:
                break
            sources.append(more)
        made.append({"messages": example(row, sources)})
    out.mkdir(parents=True, exist_ok=True)
    cut = n * 5 // 6
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made[:cut]))
    (out / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made[cut:]))
    lengths = [length(r["messages"]) for r in made]
    print(f"{n} examples of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / n:.0f}) -> {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shape")
    s.add_argument("out", type=Path)
    s.add_argument("--gguf", help="an offline model name (rqa.models.OFFLINE_MODELS)")
    s.add_argument("--qwen25-3b", action="store_true", help="Qwen2.5-3B-Instruct's shape")
    s.add_argument("--tokenizer", type=Path)
    s = sub.add_parser("weights")
    s.add_argument("shape_dir", type=Path)
    s.add_argument("out", type=Path)
    s = sub.add_parser("long-data")
    s.add_argument("data", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--tokenizer", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "shape":
        if bool(args.gguf) == bool(args.qwen25_3b):
            ap.error("shape takes --gguf NAME or --qwen25-3b --tokenizer DIR")
        shape(args.out, args.gguf, args.tokenizer)
    elif args.cmd == "weights":
        weights(args.shape_dir, args.out)
    else:
        long_data(args.data, args.out, args.tokenizer)


if __name__ == "__main__":
    main()
