"""Check every link of a built documentation site (``mkdocs build``) offline.

Internal links and anchors must resolve: the target file exists in the site
and, with a ``#fragment``, has an element with that id.  External links are
not fetched, only listed.  Exit status 1 on any broken link.

Usage: python .ci/check_links.py SITE_DIR
"""

from __future__ import annotations

import sys
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif (name == "href" and tag in ("a", "link", "area")) or (name == "src" and tag in ("img", "script")):
                self.links.append(value)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def _target(site: Path, page: Path, url: str) -> Path:
    path = unquote(urlsplit(url).path)
    t = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path if path else page)
    return t / "index.html" if t.is_dir() else t


def check(site: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(broken links, external URL -> pages that link to it)."""
    site = site.resolve()
    pages = {p: _parse(p) for p in sorted(site.rglob("*.html"))}
    broken: list[str] = []
    external: dict[str, list[str]] = defaultdict(list)
    for page, parsed in pages.items():
        rel = page.relative_to(site).as_posix()
        for url in parsed.links:
            scheme = urlsplit(url).scheme
            if scheme in ("http", "https", "mailto", "data", "javascript"):
                if scheme in ("http", "https", "mailto"):
                    external[url].append(rel)
                continue
            base, fragment = urldefrag(url)
            target = _target(site, page, base).resolve()
            if not target.is_relative_to(site) or not target.exists():
                where = target.relative_to(site) if target.is_relative_to(site) else target
                broken.append(f"{rel}: {url} (no {where})")
                continue
            if fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(fragment) not in ids:
                    broken.append(f"{rel}: {url} (no id {fragment!r} in {target.relative_to(site)})")
    return broken, external


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    site = Path(argv[1]).resolve()
    if not (site / "index.html").is_file():
        print(f"{site} is not a built site (no index.html)", file=sys.stderr)
        return 2
    broken, external = check(site)
    n_pages = sum(1 for _ in site.rglob("*.html"))
    print(f"{n_pages} pages checked; {len(external)} external links (not fetched):")
    for url in sorted(external):
        print(f"  {url}  ({len(external[url])} page{'s' if len(external[url]) > 1 else ''})")
    for line in broken:
        print(f"broken: {line}", file=sys.stderr)
    print(f"{len(broken)} broken internal links")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
