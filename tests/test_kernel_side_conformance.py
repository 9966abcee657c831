"""The kernel-side conformance rules (dmamap/testing/areas/kernel_side.py):
every in-tree platform passes them, and a backend whose own user-mapping hook
drops the write-combining attribute fails dma_mmap_wc_attribute by name."""

from __future__ import annotations

import pytest

from dmamap.backends.arm import ArmBackend
from dmamap.device import Device
from dmamap.mm import PgProt, Vma, remap_pfn_chunks
from dmamap.testing import run_conformance

RULES = ["ioremap_readl_round_trip", "dma_mmap_wc_attribute"]


@pytest.mark.parametrize("platform", ["x86", "arm", "sram", "riscv"])
def test_in_tree_platforms_pass(platform: str) -> None:
    report = run_conformance(platform, rules=RULES)
    assert report.ok, [r.message for r in report.results if r.outcome == "failed"]
    assert {r.rule for r in report.results} == set(RULES)


class CacheableUserMapBackend(ArmBackend):
    """Fills user mappings itself and always maps them cacheable, ignoring the
    protection the helpers computed: a NORMAL alias of NORMAL_NC memory."""

    name = "broken-cacheable-user-map"

    def mmap_user(self, dev: Device, vma: Vma, chunks: list[tuple[int, int]], first_page: int, nr_pages: int,
                  prot: PgProt, strategy: str, is_ram: bool) -> bool:
        cached = prot.with_cache("NORMAL")   # BUG: the requested attribute is dropped
        vma.page_prot = cached
        remap_pfn_chunks(vma, vma.start, chunks, first_page, nr_pages, cached)
        return True


def test_a_cacheable_user_alias_fails_dma_mmap_wc_attribute() -> None:
    report = run_conformance(CacheableUserMapBackend, rules=RULES)
    assert report.failed_rules == {"dma_mmap_wc_attribute"}
    (msg,) = [r.message for r in report.results if r.outcome == "failed"]
    assert msg.startswith("[dma_mmap_wc_attribute] at 0x") and "NORMAL" in msg and "NORMAL_NC" in msg
