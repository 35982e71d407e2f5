"""`python -m build all`: every stage in order under --out, with each stage's wall time in timings.json.

The stage order is written here and nowhere else. runs/tiny.sh, runs/cpu.sh and runs/t4.sh run
`build all` for their preset with what only they choose (the generator, chunks per paper, whether
publish pushes), and runs/cpu.sh adds the preference loop after it. Beside each stage: what
`build all` gives it beyond its own defaults, and why; times are the cpu preset's on 2 cores
without a GPU (its whole run from PDFs to evaluation took 1 h 38 min, docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import time
from argparse import Namespace
from pathlib import Path
from typing import Callable

from build import dataset, embedder, evaluate, export, publish, train
from build.presets import PRESETS


def stages(args) -> list[tuple[str, Callable[[Namespace], dict], Callable[[], Namespace]]]:
    """(name, the stage's command, a function making its arguments) in order; the arguments are
    made when the stage starts, as some read an earlier stage's output."""
    out, tiny = Path(args.out), args.preset == "tiny"
    return [
        # tiny: 3 papers, 40 chunks each: enough for a train/val/test split by paper, seconds to validate
        ("dataset", dataset.cli, lambda: Namespace(
            papers=args.papers, out=out / "data", generator=args.generator, teacher=args.teacher, base_url=None,
            model=None, max_papers=args.max_papers or (3 if tiny else None),
            max_per_paper=args.max_per_paper or (40 if tiny else None), minutes=None)),
        # the retriever's own fine-tune; the evaluation index is built with it and carries it to the Hub.
        # Every train-paper chunk gives an inverse-cloze pair; one epoch of batch 32 (in-batch
        # negatives): 12 minutes for the cpu run. tiny: 24 chunks, batch 8: the code path in under a minute
        ("embedder", embedder.cli, lambda: Namespace(
            data=out / "data", out=out / "embedder", base=None, epochs=None, batch_size=8 if tiny else None,
            max_chunks=24 if tiny else None)),
        # the preset's recipe (build/presets.py).
        # cpu: two passes (early stopping on validation loss keeps the better; 16 min for 110 examples, at
        #   about 220 tokens/s; one pass tied the base on dev fact accuracy at q4_0, two won it), batch
        #   1 x 4 accumulation, over examples of ~900 tokens (the app's prompt with five sources), the
        #   seed's LoRA (r 16, alpha 64, q/k/v/o), lr 2e-4.
        # t4: batch 4 x 8 accumulation at 4096 tokens, NF4 + fp16 compute, paged AdamW 8-bit, 5 epochs
        #   with early stopping on validation loss (the seed's recipe; LoRA bias "none" because its
        #   "lora_only" stops fp16 training at step 1, and adapters in fp32 because fp16's grad scaler
        #   cannot unscale the bf16 ones TRL makes; 10.0 GiB peak on the 3B shape: docs/BENCHMARKS.md).
        # tiny: 12 steps of batch 2 at 1280 tokens (the app's prompt with five sources fits)
        ("train", train.cli, lambda: Namespace(
            method="sft", data=out / "data", out=out / "run", preset=args.preset, base=None, max_steps=None,
            batch_size=None, max_length=None, epochs=None, save_every=None)),
        # the GGUF LoRA adapter (adapter-f16.gguf: what the app applies to the offline base), and the
        # merged model quantized to q4_0 (LoRA-adapted tensors kept at q8_0) and q8_0 (for the Hub)
        ("export", export.cli, lambda: Namespace(run=out / "run", out=out / "export", preset=args.preset,
                                                 data=out / "data", adapter_only=False, scale=1.0)),
        # base vs tuned at the same quantization, through the app's answer path, on the unseen-paper test
        # split and on the dev set; the index is built with the tuned embedder from the dataset's papers.
        # tiny: q4_0 only, 4 questions per set and 64 new tokens: a random model only has to run through
        # the answer path
        ("evaluate", evaluate.cli, lambda: Namespace(
            index=out / "index", embedder=out / "embedder", export=out / "export",
            quants="q4_0" if tiny else "q4_0,q8_0", tuned_model=None, base_model=None,
            papers=papers_of(out / "data"), test=out / "data" / "test.jsonl", dev=args.dev,
            limit=args.eval_limit or (4 if tiny else None), ratings=None, judge_base_url=None, judge_model=None,
            max_new_tokens=64 if tiny else 256, out=out / "eval")),
        # the SFT model, its index and the Space app; a dry run (the folders that would be pushed) unless --push
        ("publish", publish.cli, lambda: Namespace(
            model_repo=args.model_repo, index_repo=args.index_repo, export=out / "export", index=out / "index",
            data=out / "data", eval=out / "eval", run=out / "run", out=out / "publish", dry_run=not args.push)),
    ]


def papers_of(data_dir: Path) -> list[Path]:
    """The papers the dataset was made from (its report.json)."""
    return [Path(p) for p in json.loads((data_dir / "report.json").read_text())["paper_files"]]


def cli(args) -> dict:
    """`python -m build all`."""
    out = Path(args.out)
    timings = {}
    for name, command, stage_args in stages(args):
        t0 = time.perf_counter()
        print(f"== {name} ({PRESETS[args.preset].name} preset)", flush=True)
        command(stage_args())
        timings[name] = round(time.perf_counter() - t0, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=1))
    print("stage wall times (s): " + json.dumps(timings))
    return timings
