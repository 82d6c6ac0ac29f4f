"""The tree keeps the shape issue #17 gave it: modules a reader can take in, settings read in one place, and
import contracts (pyproject `[tool.importlinter]`, run by `make lint`) that fail when a layer is crossed."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "rules", "grid")
MAX_LINES = 400


def production_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def over_the_limit(paths: list[Path], root: Path) -> dict[str, int]:
    """The modules longer than MAX_LINES, with their line counts."""
    counts = {path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
              for path in paths}
    return {rel: n for rel, n in counts.items() if n > MAX_LINES}


def test_no_production_module_is_over_the_line_limit(tmp_path: Path) -> None:
    # the check itself: a module one line over the limit is found, one at the limit is not
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    (tmp_path / "full.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    assert over_the_limit(sorted(tmp_path.glob("*.py")), tmp_path) == {"long.py": MAX_LINES + 1}
    # issue #17: every production module within the limit (the last two over it, the case book and the
    # simulator's planner, were split by role in the end)
    assert over_the_limit(production_modules(), ROOT) == {}, f"over {MAX_LINES} lines"


def environment_reads(source: str) -> list[int]:
    """Lines that read the process environment: `os.environ`, `os.getenv`, `from os import environ/getenv`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        attribute = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
            and node.value.id == "os" and node.attr in ("environ", "getenv", "environb", "putenv")
        imported = isinstance(node, ast.ImportFrom) and node.module == "os" \
            and any(a.name in ("environ", "getenv", "environb") for a in node.names)
        if attribute or imported:
            lines.append(node.lineno)
    return sorted(lines)


def test_only_config_reads_the_environment() -> None:
    assert environment_reads("import os\nx = os.environ.get('A')\nfrom os import getenv\n") == [2, 3]
    found = {path.relative_to(ROOT).as_posix(): environment_reads(path.read_text(encoding="utf-8"))
             for path in production_modules()}
    readers = {rel: lines for rel, lines in found.items() if lines}
    assert set(readers) == {"pipeline/config.py"}, readers


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on a copy of the tree (the copy's packages first on the import path)."""
    script = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(script), "--no-cache"], cwd=tree, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def copy_tree(dest: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "data", "*.geojson"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_import_contracts_hold_and_fail_when_a_layer_is_crossed(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path / "tree")
    kept = lint_imports(tree)
    assert kept.returncode == 0, kept.stdout + kept.stderr

    stage = tree / "pipeline" / "stages" / "decode.py"
    stage.write_text(stage.read_text(encoding="utf-8") + "\nfrom pipeline.runtime import topics  # noqa: E402\n",
                     encoding="utf-8")
    rules = tree / "rules" / "durations.py"
    rules.write_text(rules.read_text(encoding="utf-8") + "\nfrom pipeline.stages import sensors  # noqa: E402\n",
                     encoding="utf-8")
    broken = lint_imports(tree)
    assert broken.returncode != 0
    out = broken.stdout
    assert "pipeline.stages.decode -> pipeline.runtime.topics" in out
    assert "rules.durations -> pipeline.stages.sensors" in out
    assert "BROKEN" in out
