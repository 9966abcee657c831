"""cffi out-of-line API build of the private ``dmamap._core`` module."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
#: The core, and every ISA descriptor file (arch/<isa>/*.c, listed in arch/arches.h).
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
extern "Python" int _dmamap_fault_cb(void *, int, uint64_t, int, uint64_t *);
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

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
