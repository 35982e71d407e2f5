"""`python -m build publish`: model card + GGUF files to a Hub model repo, the index to a dataset repo.

`--dry-run` writes exactly the folders that would be pushed (model, index, and the Space app with
the repo names filled in) and pushes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from rqa.errors import UserError

CARD = """---
license: apache-2.0
base_model: {base}
tags: [gguf, qlora, rqa, research-qa]
library_name: llama.cpp
---

# {repo}

A {base} model fine-tuned by rqa with LoRA/QLoRA to answer technical AI-research questions from
retrieved paper chunks, citing them as [n]. Files: {files}. `adapter-f16.gguf` is the same fine-tune
as a GGUF LoRA adapter for the stock base (llama.cpp `--lora`, llama-cpp-python `lora_path`); the
`model-*.gguf` files have it merged in.

## Data
{data}

## Recipe
```json
{recipe}
```

## Evaluation
{evaluation}
"""


ROOT = Path(__file__).resolve().parent.parent


def lookup_file(evaluation: dict) -> tuple[str, str]:
    """The GGUF that answers lookup questions on the Space, and why: q4_0 (the app's default routing:
    q4_0 for lookups, q8_0 for reasoning) unless the fine-tuned q4_0 answered fewer questions
    correctly than its q8_0 over the sets that evaluated both (`build evaluate`'s evaluation.json).
    A correct answer is worth more than the second q4_0 saves; the fourth cpu run's q4_0 lost 3 dev answers."""
    quants = ("q4_0", "q8_0")
    both = [rows for rows in evaluation.values() if all(f"fine-tuned {q}" in rows for q in quants)]
    if not both:
        return "model-q4_0.gguf", "the evaluation does not compare the fine-tune's q4_0 and q8_0"
    right = {q: sum(round(rows[f"fine-tuned {q}"]["fact_accuracy"] * rows[f"fine-tuned {q}"]["questions"])
                    for rows in both) for q in quants}
    why = f"fine-tuned q4_0 answered {right['q4_0']} questions correctly, q8_0 {right['q8_0']}"
    return ("model-q8_0.gguf", why) if right["q4_0"] < right["q8_0"] else ("model-q4_0.gguf", why)


def stage_space(out: Path, model_repo: str, index_repo: str, lookup: str | None = None) -> Path:
    """The Space folder: space/ with the rqa package beside app.py and the repo names (and, when
    given, the file that answers lookup questions) filled in."""
    space = out / "space"
    shutil.copytree(ROOT / "space", space)
    shutil.copytree(ROOT / "rqa", space / "rqa", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "scripts" / "build-llama-server.sh", space)  # the Dockerfile builds llama-server with it
    config = {"model_repo": model_repo, "index_repo": index_repo, **({"lookup_file": lookup} if lookup else {})}
    (space / "rqa_space.json").write_text(json.dumps(config))
    return space


STAGED = ".rqa-publish"  # marks a folder publish staged, so that only such a folder is emptied again


def clear_staging(out: Path) -> None:
    """An empty `out` to stage into. A folder that holds anything publish did not stage is refused,
    not deleted: `--out .` must not take the checkout with it."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / STAGED).exists():
        raise UserError(f"{out} holds files publish did not stage; name an empty or new folder for --out")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / STAGED).write_text("staged by `python -m build publish`; emptied by the next run\n")


def stage_folders(out: Path, model_repo: str, export_dir: Path, index_dir: Path, base: str,
                  dataset_card: str = "", recipe: dict | None = None, evaluation_md: str = "") -> tuple[Path, Path]:
    model_dir, index_out = out / "model", out / "index"
    clear_staging(out)
    model_dir.mkdir(parents=True)
    ggufs = sorted(Path(export_dir).glob("model-*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no model-*.gguf in {export_dir}: run `python -m build export` first")
    ggufs += sorted(Path(export_dir).glob("adapter-*.gguf"))
    for f in ggufs:
        shutil.copy2(f, model_dir / f.name)
    (model_dir / "README.md").write_text(CARD.format(
        base=base, repo=model_repo, files=", ".join(f"`{f.name}`" for f in ggufs),
        data=dataset_card or "(no dataset card)", recipe=json.dumps(recipe or {}, indent=1),
        evaluation=evaluation_md or "(not evaluated)"))
    if not (Path(index_dir) / "manifest.json").exists():
        raise FileNotFoundError(f"no index at {index_dir}")
    shutil.copytree(index_dir, index_out)
    return model_dir, index_out


def push(model_dir: Path, index_dir: Path, model_repo: str, index_repo: str, token: str | None = None) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(model_repo, repo_type="model", exist_ok=True)
    api.upload_folder(repo_id=model_repo, folder_path=str(model_dir), repo_type="model",
                      commit_message="rqa: fine-tuned GGUF files and model card")
    api.create_repo(index_repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(repo_id=index_repo, folder_path=str(index_dir), repo_type="dataset",
                      commit_message="rqa: retrieval index")


def _text(folder: Path | None, name: str) -> str:
    path = Path(folder) / name if folder else None
    return path.read_text() if path and path.exists() else ""


def cli(args) -> dict:
    """`python -m build publish`: stage the model, index and Space folders, choose the Space's lookup
    GGUF from the evaluation, and push (or with --dry-run, say what would be pushed)."""
    recipe = json.loads((Path(args.run) / "train_metrics.json").read_text())["preset"] if args.run else {}
    model_dir, index_dir = stage_folders(Path(args.out), args.model_repo, Path(args.export), Path(args.index),
                                         recipe.get("base", ""), _text(args.data, "README.md"), recipe,
                                         _text(args.eval, "evaluation.md"))
    scores = _text(args.eval, "evaluation.json")
    lookup, why = lookup_file(json.loads(scores)) if scores else ("model-q4_0.gguf", "no evaluation given")
    print(f"the Space answers lookup questions with {lookup} ({why})")
    space = stage_space(Path(args.out), args.model_repo, args.index_repo, lookup)
    if args.dry_run:
        print(f"dry run: would push {model_dir} -> {args.model_repo}, {index_dir} -> {args.index_repo}; "
              f"Space app staged in {space}")
    else:
        push(model_dir, index_dir, args.model_repo, args.index_repo, os.environ.get("HF_TOKEN"))
    return {"model_dir": str(model_dir), "index_dir": str(index_dir), "space": str(space), "dry_run": args.dry_run,
            "lookup_file": lookup, "lookup_why": why}
