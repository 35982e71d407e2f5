"""rqa's build pipeline: papers -> QA dataset -> QLoRA fine-tuning -> GGUF -> evaluation -> Hub.

One module per stage, each runnable alone through `python -m build STAGE` and all together
through `python -m build all`.
"""
