"""The in-tree backends run through the same conformance classes a port uses."""

from __future__ import annotations

from dmamap.testing import BackendConformance


class TestX86Conformance(BackendConformance):
    backend = "x86"


class TestArmConformance(BackendConformance):
    backend = "arm"


class TestSramConformance(BackendConformance):
    backend = "sram"


class TestRiscvConformance(BackendConformance):
    backend = "riscv"


class TestIommuConformance(BackendConformance):
    backend = "iommu"


class TestArmv6Conformance(BackendConformance):
    backend = "armv6"
