"""docs/errors.md documents exactly the classes of dmamap.errors: the table
names every class with its parent, its builtin and its rule, and each class's
example raises that class."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import pytest

import dmamap
import dmamap.errors as errors

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"
README = ROOT / "README.md"
ROW = re.compile(r"^\|\s*`(\w+)`\s*\|\s*`(\w+)`\s*\|\s*(?:`(\w+)`|—)\s*\|\s*(.+?)\s*\|\s*$")
#: Classes never raised as such: their examples raise a subclass.
BASES = {"DmamapError", "AccessFault", "BusError", "DmaApiError"}


def _classes() -> dict[str, type[errors.DmamapError]]:
    return {n: c for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.DmamapError)}


def _table(doc: Path = DOC) -> dict[str, tuple[str, str | None, str]]:
    rows = {}
    for line in doc.read_text().splitlines():
        m = ROW.match(line)
        if m:
            name, parent, builtin, rule = m.groups()
            assert name not in rows, f"{name} documented twice"
            rows[name] = (parent, builtin, rule)
    return rows


def _builtin(cls: type) -> str | None:
    """The nearest builtin exception in the MRO, other than Exception itself."""
    for k in cls.__mro__:
        if getattr(builtins, k.__name__, None) is k and k not in (Exception, BaseException, object):
            return k.__name__
    return None


def _examples() -> tuple[str, dict[str, str]]:
    text = DOC.read_text()
    body = text.split("## The rules, with an example each", 1)[1]
    blocks = re.findall(r"^### (\w+)\n(.*?)(?=^### |\Z)", body, flags=re.S | re.M)
    setup = re.search(r"```python\n(.*?)```", body, flags=re.S)
    assert setup is not None
    out = {}
    for name, section in blocks:
        code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
        assert len(code) == 1, f"section {name} needs exactly one example"
        out[name] = code[0]
    return setup.group(1), out


def test_every_class_is_documented_and_every_documented_class_exists() -> None:
    table, classes = _table(), _classes()
    assert set(table) == set(classes), (sorted(set(classes) - set(table)), sorted(set(table) - set(classes)))
    assert set(errors.__all__) == set(classes)


@pytest.mark.parametrize("name", sorted(_classes()))
def test_table_row_matches_the_class(name: str) -> None:
    cls = _classes()[name]
    parent, builtin, rule = _table()[name]
    assert cls.__bases__[0].__name__ == parent, f"{name}: first base is {cls.__bases__[0].__name__}"
    assert _builtin(cls) == builtin, f"{name}: builtin is {_builtin(cls)}, documented {builtin}"
    if builtin is not None:
        assert issubclass(cls, getattr(builtins, builtin))
    assert rule == cls.rule
    assert getattr(dmamap, name) is cls, f"{name} is not exported by dmamap"


def test_readme_errors_table_matches_the_docs() -> None:
    """The README's errors table is the same table, so it matches the code too."""
    assert _table(README) == _table()


def test_every_class_has_one_example_section() -> None:
    _, examples = _examples()
    assert set(examples) == set(_classes())


@pytest.mark.parametrize("name", sorted(_classes()))
def test_example_raises_its_class(name: str) -> None:
    setup, examples = _examples()
    cls = _classes()[name]
    ns: dict[str, object] = {}
    exec(compile(setup, "errors.md setup", "exec"), ns)   # noqa: S102 - the documentation's own code
    try:
        with pytest.raises(cls) as info:
            exec(compile(examples[name], f"errors.md {name}", "exec"), ns)   # noqa: S102
        if name not in BASES:
            assert type(info.value) is cls, f"the {name} example raises {type(info.value).__name__}"
        assert str(info.value)
    finally:
        for v in list(ns.values()):
            if isinstance(v, dmamap.Machine):
                v.close()
