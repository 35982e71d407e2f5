"""Hugging Face Space entry: model and index come from the Hub repos in rqa_space.json."""

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # a repo checkout: rqa/ is one level up
sys.path.insert(0, str(HERE))  # a published Space: `build publish` copies rqa/ beside this file


def configure(config_file: Path = HERE / "rqa_space.json") -> None:
    """Repo names (and the file for lookup questions, which `build publish` chose from the
    evaluation) from the config file unless the environment already sets them."""
    config = json.loads(config_file.read_text())
    os.environ.setdefault("RQA_HUB_REPO", config["model_repo"])
    os.environ.setdefault("RQA_HUB_INDEX_REPO", config["index_repo"])
    if config.get("lookup_file"):
        os.environ.setdefault("RQA_HUB_Q4_FILE", config["lookup_file"])


if __name__ == "__main__":
    configure()
    from rqa.web import main

    sys.exit(main())
