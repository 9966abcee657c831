"""The conformance classes a port subclasses run clean with every warning an error
(no deprecated fixture forms, e.g. a class-scoped fixture as instance method)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_suite_runs_clean_under_W_error(tmp_path: Path) -> None:
    (tmp_path / "test_port.py").write_text(
        "from dmamap.testing import BackendConformance, IOConformance\n\n"
        "class TestSram(BackendConformance):\n"
        "    backend = 'sram'\n\n"
        "class TestX86Io(IOConformance):\n"
        "    backend = 'x86'\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "-c",
         str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "-k", "mmio or pio or coherent_to_page",
         str(tmp_path / "test_port.py")],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "warning" not in proc.stdout.lower(), proc.stdout
    assert " passed" in proc.stdout and " failed" not in proc.stdout
