"""Layer contracts of the package (pyproject.toml [tool.importlinter]), checked with import-linter.

The contracts say which package may import which (docs/ARCHITECTURE.md). Each test runs
``lint-imports`` on a source tree: the real one must keep every contract; a copy with one
forbidden import added must break them, so the check is known to bite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp  # installed with import-linter (dev extras)
import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def _lint(src: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` with the repository's config on the package under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src), "NO_COLOR": "1"}
    code = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=src, env=env, capture_output=True, text=True, timeout=300,
    )


def _copy_package(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(SRC / "mineralseg", src / "mineralseg", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _layers() -> list[list[str]]:
    from importlinter.api import read_configuration

    config = read_configuration(str(REPO / "pyproject.toml"))
    (contract,) = [c for c in config["contracts_options"] if c["type"] == "layers"]
    return [[m.strip() for m in layer.replace(":", "|").split("|")] for layer in contract["layers"]]


def test_the_package_keeps_its_layer_and_cycle_contracts():
    result = _lint(SRC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_every_module_is_in_a_layer():
    """A new top-level module or package must be placed in the layers (the contract is
    otherwise silent about it)."""
    placed = {m for layer in _layers() for m in layer}
    graph = grimp.build_graph("mineralseg", cache_dir=None)
    for module in sorted(graph.find_children("mineralseg")):
        covered = module in placed or any(p.startswith(module + ".") for p in placed)
        assert covered, f"{module} is in no layer of pyproject.toml [tool.importlinter]"
        if module not in placed:  # a package split across layers: every child placed
            for child in graph.find_children(module):
                assert child in placed, f"{child} is in no layer of pyproject.toml [tool.importlinter]"


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a low layer importing a high one
        ("io/atomic.py", "import mineralseg.train.run", "higher layers import lower ones"),
        ("evaluate/metrics.py", "from mineralseg.train import losses", "higher layers import lower ones"),
        # two independent siblings
        ("data/dataset.py", "from mineralseg.prep import tiling", "higher layers import lower ones"),
        # a cycle inside one package
        ("prep/registration/geometry.py", "from mineralseg.prep.registration import ecc", "no import cycles"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, broken):
    src = _copy_package(tmp_path)
    path = src / "mineralseg" / module
    path.write_text(path.read_text() + f"\n{line}  # forbidden\n")
    result = _lint(src)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout
    assert "BROKEN" in result.stdout
