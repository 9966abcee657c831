"""The offline link checker that CI runs over the built documentation site."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_links", ROOT / ".ci" / "check_links.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    """Missing pages, missing anchors (same page and other page) are reported;
    good links, directory-style links and external URLs are not."""
    (tmp_path / "index.html").write_text(
        '<h1 id="top">x</h1><a href="guide/">ok</a><a href="guide/#intro">ok</a><a href="#top">ok</a>'
        '<a href="#nowhere">bad</a><a href="missing/">bad</a><a href="guide/#gone">bad</a>'
        '<a href="https://example.org/x">ext</a><img src="pic.png">')
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "index.html").write_text('<h2 id="intro">i</h2><a href="../index.html#top">ok</a>'
                                                   '<a href="../../outside.html">bad</a>')
    (tmp_path / "pic.png").write_bytes(b"")
    mod = _checker()
    broken, external = mod.check(tmp_path)
    assert sorted(b.split(":")[1].split()[0] for b in broken) == sorted(
        ["#nowhere", "missing/", "guide/#gone", "../../outside.html"])
    assert dict(external) == {"https://example.org/x": ["index.html"]}
    assert mod.main(["check_links", str(tmp_path)]) == 1
    (tmp_path / "index.html").write_text('<a href="guide/">ok</a>')
    (tmp_path / "guide" / "index.html").write_text("<p>fine</p>")
    assert mod.main(["check_links", str(tmp_path)]) == 0


def test_readme_links_are_rewritten_for_the_site() -> None:
    """The hook that makes the README the quick start points docs/ links at pages and
    turns other repository paths into source-tree mentions."""
    spec = importlib.util.spec_from_file_location("hooks", ROOT / "docs" / "_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    md = "[errors](docs/errors.md#x), [ex](examples/dmamap-riscv), ![p](docs/benchmarks.png), [w](https://a.b/c)"
    out = hooks._rewrite(md, "README.md")
    assert "[errors](errors.md#x)" in out and "ex (`examples/dmamap-riscv`) in the source tree" in out
    assert "![p](docs/benchmarks.png)" in out and "[w](https://a.b/c)" in out
    assert hooks._rewrite("[b](backends.md)", "docs/index.md") == "[b](backends.md)"
