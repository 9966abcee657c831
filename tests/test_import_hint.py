"""Importing dmamap from a source tree whose C core is not built says what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# -S: no site-packages, so no editable-install finder can supply the core from
# elsewhere (as after a plain ``pip install .``, the clone's dmamap/ shadows it).


@pytest.mark.parametrize("missing", ["_core*", "_cpu*.so"])
def test_source_tree_without_core_gives_a_hint(tmp_path: Path, missing: str) -> None:
    """A clone (dmamap/ next to csrc/, without dmamap/_core*.so or the register-access
    extension) imported from its own directory fails with an ImportError that says to
    run pip install -e . or leave."""
    shutil.copytree(ROOT / "dmamap", tmp_path / "dmamap",
                    ignore=shutil.ignore_patterns(missing, "__pycache__"))
    shutil.copytree(ROOT / "csrc", tmp_path / "csrc")
    res = subprocess.run([sys.executable, "-S", "-c", "import dmamap"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: you are importing dmamap from a source tree")
    assert "pip install -e ." in last and "leave the directory" in last and str(tmp_path) in last


def test_installed_layout_error_is_untouched(tmp_path: Path) -> None:
    """Without csrc/ beside the package (not a source tree) the original error stays."""
    shutil.copytree(ROOT / "dmamap", tmp_path / "dmamap",
                    ignore=shutil.ignore_patterns("_core*", "__pycache__"))
    res = subprocess.run([sys.executable, "-S", "-c", "import dmamap"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1
    assert "No module named 'dmamap._core'" in res.stderr and "source tree" not in res.stderr
