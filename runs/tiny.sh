#!/usr/bin/env bash
# The whole pipeline in minutes on a laptop CPU, on a random tiny Qwen2: checks the plumbing, not
# the quality (the test suite runs the same stages). Run from the repository root. The stages, in
# order, and the tiny preset's small numbers (3 papers, 40 chunks each, 12 training steps, 4
# questions per evaluation set) are build/pipeline.py's.
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=${OUT:-out/tiny}
PAPERS=${PAPERS:-../shared/corpus/papers}

# the offline extractive generator: no key, no model, grounded answers; publish is a dry run
$PY -m build all --preset tiny --papers "$PAPERS" --out "$OUT" --generator offline
