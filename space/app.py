"""Hugging Face Space entry: model and index come from the Hub repos in rqa_space.json."""

import json
import os
import sys
from pathlib import Path

# A published Space has rqa/ beside this file (`build publish` copies it), which Python finds on its
# own; in a checkout, rqa is installed (`pip install -e .`).
HERE = Path(__file__).resolve().parent


def configure(config_file: Path = HERE / "rqa_space.json") -> None:
    """Repo names (and the file for lookup questions, which `build publish` chose from the
    evaluation) from the config file unless the environment already sets them."""
    config = json.loads(config_file.read_text())
    os.environ.setdefault("RQA_HUB_REPO", config["model_repo"])
    os.environ.setdefault("RQA_HUB_INDEX_REPO", config["index_repo"])
    if config.get("lookup_file"):
        os.environ.setdefault("RQA_HUB_Q4_FILE", config["lookup_file"])
    # A public Space's papers are not changed from its page unless the owner opens them (with a key).
    os.environ.setdefault("RQA_PAPERS_EDIT", "off")


if __name__ == "__main__":
    configure()
    from rqa.__main__ import main

    sys.exit(main(["serve", *sys.argv[1:]]))
