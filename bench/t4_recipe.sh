#!/usr/bin/env bash
# The t4 preset's recipe (NF4 + fp16, batch 4 x 8 accumulation, max length 4096, paged AdamW 8-bit,
# gradient checkpointing) through `python -m build train`, timed on a GPU machine: peak VRAM and
# tokens/s. That machine has no network and takes 64 MiB of files a call, and the packages it lacks
# travel as wheels. Two ways to get a base there:
# - random-weight models of the real shapes (bench/random_base.py): speed and memory, in one call;
# - the real offline GGUF, in 63 MB parts, one part a call: each call's carried paths are gone at the
#   next call, so `receive` keeps each part in /tmp/parts, which lives as long as the machine is warm
#   (about 5 s of device time a call; 18 calls for the 1.5B's 1.1 GB).
#
#   bash bench/t4_recipe.sh prepare DATA   # here: .gpu/ (shapes, data) and .whl/ (wheels); both git-ignored
#   bash bench/t4_recipe.sh run            # there, from the repository root; results in $OUT (or out/t4-bench)
#   bash bench/t4_recipe.sh split NAME     # here: an offline GGUF (rqa.models) in parts, .gpu/parts/NAME/NN
#   bash bench/t4_recipe.sh receive        # there, once per call that carries one part (.gpu/parts/NAME/NN)
#   bash bench/t4_recipe.sh run real       # there, with .whl, .gpu/site, .gpu/data: 20 steps on each received model
set -uo pipefail
PY=${PY:-python3}

if [ "${1:-}" = prepare ]; then
    DATA=${2:?the dataset folder of a cpu run (train.jsonl, val.jsonl)}
    PY=${PY_HERE:-.venv/bin/python}
    mkdir -p .gpu/data .whl
    cp "$DATA/train.jsonl" "$DATA/val.jsonl" .gpu/data/
    $PY -m bench.random_base shape .gpu/coder-1.5b --gguf qwen2.5-coder-1.5b-instruct
    $PY -m bench.random_base shape .gpu/qwen2.5-3b --qwen25-3b --tokenizer .gpu/coder-1.5b
    $PY -m bench.random_base long-data .gpu/data .gpu/long --tokenizer .gpu/coder-1.5b
    # the versions requirements.txt pins; bitsandbytes unpacked with only its CUDA 13.0 library (size)
    plat="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
    for p in trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 transformers==5.23.0 peft==0.21.2 \
             regex==2026.11.19 nltk==3.10.4 gguf==0.19.0 bitsandbytes==0.50.2; do
        $PY -m pip download -q --no-deps --only-binary=:all: $plat -d .whl "$p"
    done
    mkdir -p .gpu/site && (cd .gpu/site && unzip -q -o ../../.whl/bitsandbytes-*.whl &&
        find bitsandbytes -name '*.so' ! -name '*cuda130*' ! -name '*cpu*' -delete) && rm .whl/bitsandbytes-*.whl
    du -sh .gpu .whl
    exit 0
fi

if [ "${1:-}" = split ]; then
    NAME=${2:?an offline model name, e.g. qwen2.5-coder-1.5b-instruct}
    f=$(.venv/bin/python -c "from rqa.models import offline_model_path as p; print(p('$NAME'))") || exit 1
    mkdir -p ".gpu/parts/$NAME" && rm -f ".gpu/parts/$NAME"/* && split -b 63000000 -d -a 2 "$f" ".gpu/parts/$NAME/"
    ls -l ".gpu/parts/$NAME"
    exit 0
fi
if [ "${1:-}" = receive ]; then
    mkdir -p /tmp/parts && cp -r .gpu/parts/* /tmp/parts/ && ls -R /tmp/parts | tail -n 3
    exit 0
fi

OUT=${OUT:-out/t4-bench}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, transformers, trl, peft, bitsandbytes as b; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bitsandbytes', b.__version__)" || exit 1

# name, shape, data, steps, time limit: the 1.5B at the app's prompts (about 950 tokens, at most 1593)
# for the issue's 20 steps; the 3B (the production base) at 4096-token prompts: does it fit a T4?
stage() {
    local name=$1 shape=$2 data=$3 steps=$4 limit=$5 t0=$SECONDS
    echo "== $name"
    $PY -m bench.random_base weights "$shape" "/tmp/base-$name" &&
    timeout "$limit" $PY -m build train --preset t4 --base "/tmp/base-$name" --data "$data" --out "/tmp/run-$name" \
        --max-steps "$steps" 2>&1 | tr '\r' '\n' | grep -vE "it/s\]|s/it\]|examples/s\]|^ *$" | tail -n 8
    cp "/tmp/run-$name/train_metrics.json" "$OUT/$name.json" 2>/dev/null
    rm -rf "/tmp/base-$name"
    echo "== $name: $((SECONDS - t0)) s"
}
if [ "${2:-}" = real ]; then
    export RQA_MODEL_CACHE=/tmp/rqa-models
    mkdir -p $RQA_MODEL_CACHE
    for dir in /tmp/parts/*; do
        name=$(basename "$dir") t0=$SECONDS
        $PY -c "import sys; from pathlib import Path; from rqa.models import offline_model_path as p
print('assembled and verified', p(sys.argv[1], parts=sorted(Path(sys.argv[2]).iterdir())))" "$name" "$dir" || exit 1
        timeout 240 $PY -m build train --preset t4 --base "$name" --data .gpu/data --out "/tmp/run-$name" --max-steps 20 \
            2>&1 | tr '\r' '\n' | grep -vE "it/s\]|s/it\]|examples/s\]|^ *$" | tail -n 60 > "$OUT/log-$name.txt"
        cp "/tmp/run-$name/train_metrics.json" "$OUT/$name.json"; cp "/tmp/run-$name/loss.png" "$OUT/loss-$name.png"
        echo "== $name (real weights): $((SECONDS - t0)) s"
    done
else
    stage coder-1.5b .gpu/coder-1.5b .gpu/data 20 150
    stage qwen2.5-3b-4096 .gpu/qwen2.5-3b .gpu/long 1 100
fi
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
print("\n| base (random weights unless named as an offline model) | data | steps | tokens | tokens/s | tokens/s without eval | peak VRAM allocated | reserved |")
print("|---|---|---|---|---|---|---|---|")
gpu = None
for f in sorted(Path(sys.argv[1]).glob("*.json")):
    m = json.loads(f.read_text())
    print(f"| {f.stem} | {'4096-token prompts' if '4096' in f.stem else 'app prompts'} | {m['steps']} | {m['tokens']:.0f} | "
          f"{m['tokens_per_s']:.0f} | {m['loop_tokens_per_s']:.0f} | {m['peak_vram_allocated_gib']:.2f} GiB | "
          f"{m['peak_vram_reserved_gib']:.2f} GiB |")
    gpu = m.get("gpu")
print("GPU:", gpu)
EOF
