"""The import rules in pyproject.toml hold, and they catch a planted violation."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=src.parent,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)}, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory) -> Path:
    if not LINT.exists():
        pytest.skip("lint-imports is not installed (pip install import-linter)")
    src = tmp_path_factory.mktemp("tree") / "src"
    shutil.copytree(ROOT / "src" / "nlpforge", src / "nlpforge", ignore=shutil.ignore_patterns("__pycache__"))
    return src


def test_the_contracts_hold(source_copy):
    result = _lint(source_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, planted, contract", [
    ("models/registry.py", "from nlpforge.training import loop", "Each layer imports only the layers below it"),
    ("serving/handler.py", "import nlpforge.training.run", "never through training code"),
    ("data/readers.py", "from nlpforge.tasks import base", "Each layer imports only the layers below it"),
    ("text/phrases.py", "from nlpforge.text import corpus", "never import each other in a circle"),
])
def test_a_planted_violation_breaks_the_build(source_copy, tmp_path, module, planted, contract):
    src = tmp_path / "src"
    shutil.copytree(source_copy, src)
    target = src / "nlpforge" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted\n")
    result = _lint(src)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
