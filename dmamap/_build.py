"""Builds of the private compiled modules: ``dmamap._core`` (cffi, out-of-line API
mode: the C core and its bindings) and ``dmamap._binding._cpu`` (a small CPython
extension: AddressSpace's register accesses, see its source).  ``python
dmamap/_build.py`` builds both in place."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI
from setuptools import Extension

ROOT = Path(__file__).resolve().parent.parent
#: Every C file of the core and of every ISA directory: adding a file needs no edit here.
SOURCES = sorted(str(p.relative_to(ROOT)) for p in (*ROOT.glob("csrc/*.c"), *ROOT.glob("arch/*/*.c")))


def _cdef() -> str:
    text = (ROOT / "csrc" / "dmamap.h").read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return "\n".join(lines)


def _flags() -> tuple[list[str], list[str]]:
    cflags = ["-O2", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wno-unused-parameter",
              "-Werror=implicit-function-declaration"]
    ldflags = ["-lpthread"]
    sanitize = os.environ.get("DMAMAP_SANITIZE", "").strip()
    if sanitize:
        cflags = [f for f in cflags if f != "-O2"] + ["-O1", "-g", "-fno-omit-frame-pointer",
                                                     f"-fsanitize={sanitize}",
                                                     "-fno-sanitize-recover=all"]
        ldflags.append(f"-fsanitize={sanitize}")
    return cflags, ldflags


ffibuilder = FFI()
ffibuilder.cdef(
    _cdef()
    + """
extern "Python" int _dmamap_io_cb(void *, int, int, int, uint64_t, int, int, uint64_t *);
extern "Python" int _dmamap_fault_cb(void *, int64_t, uint64_t, int, uint64_t *);
"""
)
_cflags, _ldflags = _flags()
ffibuilder.set_source(
    "dmamap._core",
    '#include "dmamap.h"\n',
    sources=[str(s) for s in SOURCES],
    include_dirs=["csrc"],
    extra_compile_args=_cflags,
    extra_link_args=_ldflags,
)

#: The register-access extension (setup.py lists it in ext_modules).
CPU_EXTENSION = Extension("dmamap._binding._cpu", sources=["dmamap/_binding/_cpu.c"],
                          extra_compile_args=[f for f in _cflags if not f.startswith("-std=")],
                          extra_link_args=[f for f in _ldflags if f != "-lpthread"])


def build_cpu_inplace() -> None:
    """Build CPU_EXTENSION next to its source, as ``build_ext --inplace`` does."""
    from setuptools import Distribution

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        dist = Distribution({"name": "dmamap", "ext_modules": [CPU_EXTENSION]})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.ensure_finalized()
        cmd.run()
    finally:
        os.chdir(cwd)


if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
    build_cpu_inplace()
