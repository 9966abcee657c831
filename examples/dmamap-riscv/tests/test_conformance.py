"""Run dmamap's conformance suite against the riscv backend, found through its
``dmamap.arch`` entry point once this package is installed."""

from dmamap.testing import BackendConformance


class TestRiscvConformance(BackendConformance):
    backend = "riscv"
