from setuptools import setup

setup(cffi_modules=["dmamap/_build.py:ffibuilder"])
