"""rqa's build pipeline: papers -> QA dataset -> QLoRA fine-tuning -> GGUF -> evaluation -> Hub.

One module per stage, its `cli(args)` run alone through `python -m build STAGE` (build/__main__.py
parses the flags), and all stages in order through `python -m build all` (build/pipeline.py, the
one place the order is written).
"""
