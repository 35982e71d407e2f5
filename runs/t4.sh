#!/usr/bin/env bash
# The production recipe on one 16 GB T4: Qwen2.5-3B-Instruct in NF4 with the seed's QLoRA settings,
# training data from Groq's llama-3.3-70b. Needs GROQ_API_KEY, HF_TOKEN and network. Run from the
# repository root. The stages, in order, and the t4 preset's recipe are build/pipeline.py's.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/t4}
PAPERS=${PAPERS:?set PAPERS to the folder of PDFs}

# every chunk of every paper: the 70B generator is fast and the seed asks for the whole corpus;
# publish pushes the model and the index to the Hub
$PY -m build all --preset t4 --papers "$PAPERS" --out "$OUT" --generator groq \
    --model-repo "${MODEL_REPO:?}" --index-repo "${INDEX_REPO:?}" --push
