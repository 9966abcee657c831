"""MkDocs hooks: the README is the quick start, and links to files outside docs/
(examples, tests) become source-tree paths instead of broken links."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
INCLUDE_README = "<!-- include: README.md -->"
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)#\s]+)(#[^)\s]*)?\)")


def _rewrite(markdown: str, base: str) -> str:
    """Links relative to ``base`` (a repository path) that land in docs/ point at the
    page; links that land elsewhere in the repository become a code path."""

    def sub(m: re.Match[str]) -> str:
        text, target, anchor = m.group(1), m.group(2), m.group(3) or ""
        if re.match(r"[a-z]+:", target):
            return m.group(0)
        path = posixpath.normpath(posixpath.join(posixpath.dirname(base), target))
        if path.startswith("docs/"):
            return f"[{text}]({path[len('docs/'):]}{anchor})"
        shown = text if text.strip("`").rstrip("/") == path.rstrip("/") else f"{text} (`{path}`)"
        return f"{shown} in the source tree"

    return LINK.sub(sub, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if INCLUDE_README in markdown:
        readme = (ROOT / "README.md").read_text()
        markdown = markdown.replace(INCLUDE_README, _rewrite(readme, "README.md"))
    return _rewrite(markdown, "docs/" + page.file.src_uri)
