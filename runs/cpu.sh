#!/usr/bin/env bash
# The cpu preset on this kind of machine (2 cores, no GPU): Qwen2.5-Coder-0.5B-Instruct, the t4
# preset's model family, trained on answers an offline teacher wrote. Run from the repository root.
# The stages, in order, and what each took here are build/pipeline.py's; the preference loop after
# them is this script's alone.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/cpu}
PAPERS=${PAPERS:-../shared/corpus/papers}

# The teacher (Qwen2.5-Coder-1.5B-Instruct behind the vendored llama-server) writes one QA pair
# per chunk, the largest stage: 7.4 a minute on 2 idle cores (data/qa's last run). Behind llama-cpp-
# python's server (5.4 a minute) 8 chunks per paper, spread over each paper, took 42 minutes and gave
# about 110 train / 12 val / 35 test examples, and the whole run from PDFs to evaluation 1 h 38 min
# (10 per paper: 54 minutes, 141 / 16 / 42). The stage resumes where it stopped if interrupted, and
# a larger --max-per-paper extends it (data/qa: 40 a paper). Publish is a dry run unless PUSH=1.
$PY -m build all --preset cpu --papers "$PAPERS" --out "$OUT" --generator teacher --max-per-paper 8 \
    ${MODEL_REPO:+--model-repo "$MODEL_REPO"} ${INDEX_REPO:+--index-repo "$INDEX_REPO"} ${PUSH:+--push}
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
