"""Every ```python block of the README and the guides runs, in order, one
namespace per page, with warnings as errors -- the examples a new user pastes.

A block whose first line is ``# excerpt: examples/drivers/NAME.py`` is a
shortened piece of a runnable driver (that file runs in tests/test_examples.py);
such a block must still compile and may only call dmamap names that exist."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

import dmamap

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
EXCERPT = re.compile(r"# excerpt: (examples/\S+\.py)")
# docs/errors.md's blocks run one by one against its setup, in tests/test_errors_doc.py
SEPARATELY = {"docs/errors.md"}


def _blocks(page: str) -> list[str]:
    return BLOCK.findall((ROOT / page).read_text())


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p) and p not in SEPARATELY])
def test_page_examples_run(page: str) -> None:
    ns: dict[str, object] = {"__name__": f"docs:{page}"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i, code in enumerate(_blocks(page)):
            m = EXCERPT.match(code)
            tree = ast.parse(code, f"{page} block {i}")
            if m:
                assert (ROOT / m.group(1)).is_file(), f"{page} block {i}: {m.group(1)} does not exist"
                names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                         and isinstance(n.value, ast.Name) and n.value.id == "dmamap"}
                missing = sorted(n for n in names if not hasattr(dmamap, n))
                assert not missing, f"{page} block {i} calls dmamap names that do not exist: {missing}"
                continue
            exec(compile(tree, f"{page} block {i}", "exec"), ns)   # noqa: S102 - the documentation's own code
