#!/usr/bin/env bash
# The whole pipeline in minutes on a laptop CPU, on a random tiny Qwen2: checks the plumbing, not
# the quality (the test suite runs the same stages). Run from the repository root.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/tiny}
PAPERS=${PAPERS:-../shared/corpus/papers}

# 3 papers, 40 chunks each: enough for a train/val/test split by paper, seconds to validate
$PY -m build dataset --papers "$PAPERS" --out "$OUT/data" --generator offline --max-papers 3 --max-per-paper 40
# 24 inverse-cloze chunks, batch 8: the embedder stage's code path in under a minute
$PY -m build embedder --data "$OUT/data" --out "$OUT/embedder" --batch-size 8 --max-chunks 24
# the tiny preset: 12 steps of batch 2 at 1280 tokens (the app's prompt with five sources fits)
$PY -m build train --data "$OUT/data" --out "$OUT/run" --preset tiny
$PY -m build export --run "$OUT/run" --out "$OUT/export" --preset tiny --data "$OUT/data"
# 4 questions per set and 64 new tokens: a random model only has to run through the answer path
$PY -m build evaluate --export "$OUT/export" --quants q4_0 \
    --index "$OUT/index" --embedder "$OUT/embedder" --papers $($PY -c "import json,sys; print(' '.join(json.load(open('$OUT/data/report.json'))['paper_files']))") \
    --test "$OUT/data/test.jsonl" --limit 4 --max-new-tokens 64 --out "$OUT/eval"
$PY -m build publish --model-repo rqa/rqa-model --index-repo rqa/rqa-index --export "$OUT/export" \
    --index "$OUT/index" --data "$OUT/data" --eval "$OUT/eval" --run "$OUT/run" --out "$OUT/publish" --dry-run
