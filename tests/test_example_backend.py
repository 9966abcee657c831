"""The worked example of docs/backends.md: an out-of-tree backend package
(examples/dmamap-thead, an ISA variant) is installed, found through its ``dmamap.arch`` entry
point, and passes the conformance suite -- from the command line and through
its own pytest file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dmamap-thead"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed into a private directory (copied first, so the
    build leaves nothing in the source tree)."""
    root = tmp_path_factory.mktemp("thead")
    src = root / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "dmamap_thead" / "__init__.py").exists()
    return target


def _env(site: Path | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", COLUMNS="160")
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return env


def _dmamap() -> list[str]:
    script = shutil.which("dmamap", path=str(Path(sys.executable).parent)) or shutil.which("dmamap")
    return [script] if script else [sys.executable, "-m", "dmamap.cli"]


def test_dmamap_conformance_thead_passes(site: Path, tmp_path: Path) -> None:
    out = tmp_path / "thead.json"
    proc = subprocess.run([*_dmamap(), "conformance", "thead", "--json", str(out)], capture_output=True, text=True,
                          env=_env(site), cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "thead conforms" in proc.stdout
    data = json.loads(out.read_text())
    assert data["backend"] == "thead" and data["ok"] is True
    assert data["summary"]["failed"] == 0 and data["summary"]["passed"] >= 90
    outcomes = {r["rule"]: r["outcome"] for r in data["rules"]}
    assert all(o == "passed" for o in outcomes.values()), outcomes
    assert data["capabilities"]["page_descriptors"] is True


def test_backend_is_unknown_without_the_package(tmp_path: Path) -> None:
    proc = subprocess.run([*_dmamap(), "conformance", "thead"], capture_output=True, text=True, env=_env(None),
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 1
    assert "unknown backend 'thead'" in proc.stderr


def test_example_pytest_suite_passes(site: Path, tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, env=_env(site), cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
