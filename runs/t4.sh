#!/usr/bin/env bash
# The production recipe on one 16 GB T4: Qwen2.5-3B-Instruct in NF4 with the seed's QLoRA settings,
# training data from Groq's llama-3.3-70b. Needs GROQ_API_KEY, HF_TOKEN and network. Run from the
# repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/t4}
PAPERS=${PAPERS:?set PAPERS to the folder of PDFs}

# every chunk of every paper: the 70B generator is fast and the seed asks for the whole corpus
$PY -m build dataset --papers "$PAPERS" --out "$OUT/data" --generator groq
$PY -m build embedder --data "$OUT/data" --out "$OUT/embedder"
# t4 preset: batch 4 x 8 accumulation at 4096 tokens, NF4 + fp16 compute, paged AdamW 8-bit,
# 5 epochs with early stopping on validation loss (the seed's recipe; LoRA bias "none" because its
# "lora_only" stops fp16 training at step 1, and adapters in fp32 because fp16's grad scaler cannot
# unscale the bf16 ones TRL makes; 10.0 GiB peak on the 3B shape: docs/BENCHMARKS.md)
$PY -m build train --data "$OUT/data" --out "$OUT/run" --preset t4
$PY -m build export --run "$OUT/run" --out "$OUT/export" --preset t4 --data "$OUT/data"
$PY -m build evaluate --export "$OUT/export" \
    --index "$OUT/index" --embedder "$OUT/embedder" --papers "$PAPERS" --test "$OUT/data/test.jsonl" --out "$OUT/eval"
$PY -m build publish --model-repo "${MODEL_REPO:?}" --index-repo "${INDEX_REPO:?}" --export "$OUT/export" \
    --index "$OUT/index" --data "$OUT/data" --eval "$OUT/eval" --run "$OUT/run" --out "$OUT/publish"
