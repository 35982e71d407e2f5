#!/usr/bin/env bash
# The cpu preset on this kind of machine (2 cores, no GPU): Qwen2.5-Coder-0.5B-Instruct, the t4
# preset's model family, trained on answers an offline teacher wrote. Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/cpu}
PAPERS=${PAPERS:-../shared/corpus/papers}

# The teacher (Qwen2.5-Coder-1.5B-Instruct behind `python -m llama_cpp.server`) writes one QA pair
# per chunk at about 5.5 per minute on 2 cores: 10 chunks per paper (spread over each paper) keep
# generation near 50 minutes; the stage resumes where it stopped if interrupted.
$PY -m build dataset --papers "$PAPERS" --out "$OUT/data" --generator teacher --max-per-paper 10
# every train-paper chunk gives an inverse-cloze pair; one epoch of batch 32 (in-batch negatives)
$PY -m build embedder --data "$OUT/data" --out "$OUT/embedder"
# cpu preset: one pass, batch 1 x 4 accumulation, over examples of ~900 tokens (the app's prompt
# with five sources), the seed's LoRA (r 16, alpha 64, q/k/v/o), lr 2e-4
$PY -m build train --data "$OUT/data" --out "$OUT/run" --preset cpu
# merge, convert, quantize to q4_0 (LoRA-adapted tensors kept at q8_0) and q8_0 (the app serves both)
$PY -m build export --run "$OUT/run" --out "$OUT/export" --preset cpu --data "$OUT/data"
# base vs tuned at the same quantization, through the app's answer path, on the unseen-paper test
# split and on the dev set; the index is built with the tuned embedder
$PY -m build evaluate --export "$OUT/export" --index "$OUT/index" --embedder "$OUT/embedder" \
    --papers "$PAPERS" --test "$OUT/data/test.jsonl" --out "$OUT/eval"
$PY -m build publish --model-repo "${MODEL_REPO:-rqa/rqa-model}" --index-repo "${INDEX_REPO:-rqa/rqa-index}" \
    --export "$OUT/export" --index "$OUT/index" --data "$OUT/data" --eval "$OUT/eval" --run "$OUT/run" \
    --out "$OUT/publish" ${PUBLISH_FLAGS---dry-run}  # PUBLISH_FLAGS= (empty) pushes
