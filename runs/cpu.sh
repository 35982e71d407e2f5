#!/usr/bin/env bash
# The cpu preset on this kind of machine (2 cores, no GPU): Qwen2.5-Coder-0.5B-Instruct, the t4
# preset's model family, trained on answers an offline teacher wrote. Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/cpu}
PAPERS=${PAPERS:-../shared/corpus/papers}

# The teacher (Qwen2.5-Coder-1.5B-Instruct behind `python -m llama_cpp.server`) writes one QA pair
# per chunk at about 5.4 per minute on 2 cores, the largest stage: 8 chunks per paper (spread over
# each paper) take 42 minutes and give about 110 train / 12 val / 35 test examples, which keeps the
# whole run from PDFs to evaluation at 1 h 38 min, measured (10 per paper: 54 minutes, 141 / 16 / 42);
# the stage resumes where it stopped if interrupted.
$PY -m build dataset --papers "$PAPERS" --out "$OUT/data" --generator teacher --max-per-paper 8
# every train-paper chunk gives an inverse-cloze pair; one epoch of batch 32 (in-batch negatives);
# 12 minutes here
$PY -m build embedder --data "$OUT/data" --out "$OUT/embedder"
# cpu preset: two passes (early stopping on validation loss keeps the better; 16 min for 110
# examples here, at about 220 tokens/s; one pass tied the base on dev fact accuracy at q4_0, two won
# it), batch 1 x 4 accumulation, over examples of ~900 tokens (the app's prompt with five sources),
# the seed's LoRA (r 16, alpha 64, q/k/v/o), lr 2e-4
$PY -m build train --data "$OUT/data" --out "$OUT/run" --preset cpu
# merge, convert, quantize to q4_0 (LoRA-adapted tensors kept at q8_0) and q8_0 (the app serves both)
$PY -m build export --run "$OUT/run" --out "$OUT/export" --preset cpu --data "$OUT/data"
# base vs tuned at the same quantization, through the app's answer path, on the unseen-paper test
# split and on the dev set; the index is built with the tuned embedder
$PY -m build evaluate --export "$OUT/export" --index "$OUT/index" --embedder "$OUT/embedder" \
    --papers "$PAPERS" --test "$OUT/data/test.jsonl" --out "$OUT/eval"
# the preference loop, with the automatic annotator in place of experts (their ratings go into the same
# database through the app's annotator tab): 2 answers per train question (greedy, then sampled at 0.8;
# about 7 s each here) give a pair where their ratings differ; DPO (beta 0.1, the same LoRA) on the SFT
# model, which is its baseline
$PY -m build judge --data "$OUT/data" --model "$OUT/export/model-q8_0.gguf" --index "$OUT/index" --db "$OUT/ratings.sqlite"
$PY -m build preferences --db "$OUT/ratings.sqlite" --index "$OUT/index" --out "$OUT/prefs"
# judge: 146 answers in 9.5 min here; DPO: 10 steps of 4 pairs, 13.5 min here (20 pairs: two passes)
$PY -m build train --method dpo --preferences "$OUT/prefs" --sft "$OUT/run" --out "$OUT/dpo" --preset cpu --max-steps 10
$PY -m build export --run "$OUT/dpo" --out "$OUT/dpo-export" --preset cpu --data "$OUT/data"
$PY -m build evaluate --export "$OUT/dpo-export" --quants q8_0 --index "$OUT/index" --embedder "$OUT/embedder" \
    --test "$OUT/data/test.jsonl" --out "$OUT/dpo-eval"
$PY -m build publish --model-repo "${MODEL_REPO:-rqa/rqa-model}" --index-repo "${INDEX_REPO:-rqa/rqa-index}" \
    --export "$OUT/export" --index "$OUT/index" --data "$OUT/data" --eval "$OUT/eval" --run "$OUT/run" \
    --out "$OUT/publish" ${PUBLISH_FLAGS---dry-run}  # PUBLISH_FLAGS= (empty) pushes
