"""What runtime CPU dispatch buys, and what batching buys: llama.cpp's own benchmarks (built with
llama-server at install) on the default model.

1. llama-bench, once with each CPU-variant kernel library alone beside it, so that the same build
   is timed with the AVX2 kernels (haswell) and with what this machine supports best.
2. llama-batched-bench with the kernels the server loads: aggregate decode and prompt processing
   for 1, 2, 4 and 8 parallel sequences (256-token prompts, 64 new tokens each), which is what
   the `slots` setting trades.

    .venv/bin/python -m bench.kernels [--model qwen2.5-coder-1.5b-instruct] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rqa.llama_server import find_binary
from rqa.models import offline_model_path


def run(folder: Path, variant: str, model: Path, threads: int) -> dict:
    """llama-bench with only `variant`'s kernels visible (or all of them: dispatch picks)."""
    with tempfile.TemporaryDirectory() as tmp:
        for f in folder.iterdir():
            if not f.name.startswith("libggml-cpu-") or variant in ("dispatch", f.name[len("libggml-cpu-"):-3]):
                (Path(tmp) / f.name).symlink_to(f)
        # a copy, not a link: ggml looks for kernels beside the executable's real path
        (Path(tmp) / "llama-bench").unlink()
        shutil.copy2(folder / "llama-bench", Path(tmp) / "llama-bench")
        out = subprocess.run([str(Path(tmp) / "llama-bench"), "-m", str(model), "-p", "512", "-n", "64",
                              "-t", str(threads), "-o", "json"], capture_output=True, text=True, check=True,
                             env={**os.environ, "LD_LIBRARY_PATH": tmp})
    rows = json.loads(out.stdout)
    speed = {("prefill" if r["n_prompt"] else "decode"): r["avg_ts"] for r in rows}
    return {"variant": variant, **speed}


def batched(folder: Path, model: Path, threads: int) -> list[dict]:
    out = subprocess.run([str(folder / "llama-batched-bench"), "-m", str(model), "-c", "4096", "-npp", "256",
                          "-ntg", "64", "-npl", "1,2,4,8", "-t", str(threads), "--output-format", "jsonl"],
                         capture_output=True, text=True, check=True, env={**os.environ, "LD_LIBRARY_PATH": str(folder)})
    return [json.loads(line) for line in (out.stdout + out.stderr).splitlines() if line.startswith("{") and "speed_tg" in line]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    server = find_binary()
    if server is None:
        raise SystemExit("llama-server is not built: run `make install`")
    model = offline_model_path(args.model)
    # x64, the floor for CPUs without AVX2, is left out: scalar kernels take minutes to say they are slow
    variants = sorted(f.name[len("libggml-cpu-"):-3] for f in server.parent.glob("libggml-cpu-*.so")
                      if "x64" not in f.name)
    print(f"\n### llama-bench -p 512 -n 64, {args.threads} threads, {model.name}\n")
    print("| kernels | prefill tokens/s | decode tokens/s |\n|---|---|---|")
    for variant in variants + ["dispatch"]:
        try:
            r = run(server.parent, variant, model, args.threads)
        except subprocess.CalledProcessError as e:  # a variant this CPU cannot run
            print(f"| {variant} | – | – (not runnable here: {e.stderr.strip().splitlines()[-1][:60]}) |")
            continue
        print(f"| {variant}{' (what the app loads)' if variant == 'dispatch' else ''} | {r['prefill']:.1f} | "
              f"{r['decode']:.1f} |", flush=True)
    print(f"\n### llama-batched-bench -npp 256 -ntg 64, {args.threads} threads\n")
    print("| parallel sequences | prompt processing tokens/s | aggregate decode tokens/s |\n|---|---|---|")
    for row in batched(server.parent, model, args.threads):
        print(f"| {row['pl']} | {row['speed_pp']:.1f} | {row['speed_tg']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
