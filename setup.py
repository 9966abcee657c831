import importlib.util
from pathlib import Path

from setuptools import setup

# The extension's definition lives beside the cffi build, in dmamap/_build.py.
_spec = importlib.util.spec_from_file_location("_dmamap_build", Path(__file__).parent / "dmamap" / "_build.py")
assert _spec is not None and _spec.loader is not None
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

setup(cffi_modules=["dmamap/_build.py:ffibuilder"], ext_modules=[_build.CPU_EXTENSION])
