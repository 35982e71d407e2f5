"""The settings are the one place of every knob, and the codebase's structure stays as documented."""

import ast
from pathlib import Path

from rqa.config import markdown_table
from tests.conftest import ROOT

PACKAGE = ROOT / "rqa"


def test_readme_settings_table_is_generated_from_the_settings():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- settings:start -->\n")[1].split("<!-- settings:end -->")[0]
    assert block == markdown_table(), "run `python -m rqa.config` and paste its output into README.md"


def test_only_the_settings_read_rqa_environment_variables():
    def rqa_name(node) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("RQA_")

    readers = []
    for path in [*PACKAGE.glob("*.py"), *(ROOT / "build").glob("*.py"), *(ROOT / "bench").glob("*.py"),
                 *(ROOT / "tests").glob("*.py"), ROOT / "app.py", ROOT / "space" / "app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            read = (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                    and node.func.attr in ("get", "getenv") and rqa_name(node.args[0])) or \
                (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and rqa_name(node.slice))
            if read:
                readers.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert [r for r in readers if not r.startswith("rqa/config.py")] == []


def rqa_imports(path: Path) -> set[str]:
    """The rqa modules a module imports at its top level (imports inside functions run later, on use)."""
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rqa"):
            names = [node.module] if node.module != "rqa" else [f"rqa.{a.name}" for a in node.names]
            out |= {n.split(".")[1] for n in names if "." in n}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("rqa.")}
    return out


def test_rqa_imports_run_one_way_and_errors_is_a_leaf():
    graph = {p.stem: rqa_imports(p) for p in PACKAGE.glob("*.py")}
    assert graph["errors"] == set() and graph["text"] == set()
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for dep in graph.get(module, ()):
            assert state.get(dep) != "open", "import cycle: " + " -> ".join(trail + [module, dep])
            if dep not in state:
                visit(dep, trail + [module])
        state[module] = "done"

    for module in graph:
        if module not in state:
            visit(module, [])


def test_the_installed_rqa_command_asks(tmp_path):
    """`pip install -e .` (make install) gives the `rqa` command; it answers from an index, from any folder."""
    import json
    import os
    import subprocess
    import sys

    from rqa.collection import ingest_paths
    from rqa.config import PRIMER_DIR, Settings

    rqa = Path(sys.prefix) / "bin" / "rqa"
    assert rqa.is_file(), "run `make install`: it installs rqa with `pip install -e .`"
    ingest_paths([PRIMER_DIR / "03-lora.md"], Settings.load(index_dir=tmp_path / "index"), progress=False)
    env = {**os.environ, "RQA_MODEL": "smollm2-135m-instruct", "RQA_MAX_NEW_TOKENS": "32", "RQA_EXPAND_TOKENS": "0"}
    out = subprocess.run([str(rqa), "ask", "What does LoRA train?", "--index", str(tmp_path / "index"), "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)
    assert answer["model"] == "smollm2-135m-instruct.gguf" and answer["adapter"] is None and answer["answer"]
