"""Run dmamap's conformance suite against the thead backend, found through its
``dmamap.arch`` entry point once this package is installed."""

from dmamap.testing import BackendConformance


class TestTheadConformance(BackendConformance):
    backend = "thead"
