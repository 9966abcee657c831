"""dma_mmap_coherent's one-call prefault (csrc/dma_mmap.c) and the cost model's
pieces (dmamap.bench): a refused mapping changes nothing, the fast path keeps
every check, a profile's costs follow the mapping size, the ranking rule."""

from __future__ import annotations

import pytest

import dmamap
from dmamap.bench import references
from dmamap.bench.harness import Pattern, model_events
from dmamap.bench.model import Profile, fit
from dmamap.bench.predict import model_agrees
from dmamap.bench.references import host_phase_events
from dmamap.bench.spread import spread
from dmamap.mm import PAGE_SIZE


@pytest.mark.parametrize("platform", ["x86", "arm", "sram"])
def test_refused_prefault_restores_the_protection(platform: str) -> None:
    with dmamap.Machine(platform) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 4 * PAGE_SIZE)
        mm = m.new_address_space()
        vma = mm.mmap(4 * PAGE_SIZE)
        vma.vm_flags_set(dmamap.VmFlags.VM_MIXEDMAP)    # remap_pfn_range refuses a mixed map
        prot, flags, ptes = vma.page_prot, vma.vm_flags, mm.stats.ptes_written
        with pytest.raises(dmamap.VmaKindError):
            dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
        assert vma.page_prot == prot and vma.vm_flags == flags and mm.stats.ptes_written == ptes
        assert not vma._dma_mapping if hasattr(vma, "_dma_mapping") else True
        dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)   # never counted as mapped


def test_prefault_fast_path_keeps_its_checks() -> None:
    with dmamap.Machine("x86") as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
        mm = m.new_address_space()
        vma = mm.mmap(2 * PAGE_SIZE)
        mm.munmap(vma)
        with pytest.raises(dmamap.VmaNotMappedError, match="dma_mmap_coherent: .* is not mapped"):
            dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
        big = mm.mmap(3 * PAGE_SIZE)
        with pytest.raises(dmamap.MmapError, match="VMA of 3 pages is larger than the 2 pages"):
            dmamap.dma_mmap_coherent(dev, big, *buf, strategy="prefault")
        assert big.vm_page_prot.cache == "WB" and mm.stats.ptes_written == 0
        with pytest.raises(TypeError, match="expected a Vma"):
            dmamap.dma_mmap_coherent(dev, "vma", *buf)   # type: ignore[arg-type]
        with pytest.raises(dmamap.InvalidArgumentError, match="unknown DMA attribute"):
            dmamap.dma_mmap_coherent(dev, big, *buf, attrs=1 << 40)
        for bad in (None, 0.0, False):
            with pytest.raises(TypeError):
                dmamap.dma_mmap_coherent(dev, big, *buf, attrs=bad)   # type: ignore[arg-type]
        ok = mm.mmap(2 * PAGE_SIZE)
        dmamap.dma_mmap_coherent(dev, ok, *buf, strategy="prefault")
        assert mm.stats.ptes_written == 2 and dmamap.VmFlags.VM_PFNMAP in ok.vm_flags
        other = dmamap.Machine("x86")
        try:
            with pytest.raises(dmamap.InvalidArgumentError, match="another machine"):
                dmamap.dma_mmap_coherent(dev, other.new_address_space().mmap(PAGE_SIZE), *buf)
        finally:
            other.close()


def test_memoized_protections_are_the_computed_ones() -> None:
    for isa in ("x86_64", "aarch64", "riscv64"):
        p = dmamap.PgProt.make(isa, write=True)
        for name in dict.fromkeys(dmamap.pgprot.cache_names(isa)):
            a, b = p.with_cache(name), p.with_cache(name)
            assert a == b and a.cache == name and a.isa == isa
    with pytest.raises(TypeError, match="cache type must be a str"):
        dmamap.PgProt.make("x86_64").with_cache(["WB"])   # type: ignore[arg-type]


def test_profile_costs_follow_the_mapping_size() -> None:
    prof = Profile("t", {"fault": 100.0, "map_call": 1000.0},
                   by_size=[(1 << 20, {"fault": 200.0}), (1 << 26, {"fault": 800.0})])
    assert prof.cost("fault") == 100 and prof.cost("fault", 4096) == 200 and prof.cost("fault", 1 << 30) == 800
    assert prof.cost("fault", 1 << 23) == pytest.approx(500)   # halfway in log2 size
    assert prof.cost("map_call", 1 << 23) == 1000                # not priced per size: the global cost
    again = Profile.from_json(prof.to_json())
    assert again.by_size == prof.by_size
    assert prof.predict({"fault": 2, "map_call": 1}, size=1 << 26) == 2600


def test_fit_holds_fixed_costs() -> None:
    rows = [({"map_call": 1, "pte_write": n}, 3000 + 250 * n) for n in (1, 16, 256)]
    assert fit(rows, ("map_call", "pte_write"), {"map_call": 3000}) == pytest.approx({"pte_write": 250})


def test_fault_around_is_priced_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel's default window (the host's is measured; a sanitizer's shadow faults perturb the probe)
    monkeypatch.setitem(references._FA, "fa", 16 * PAGE_SIZE)
    # 32 pages, loads on pages 0 and 20: two 16-page windows, two faults, 30 extra entries
    pat = Pattern(2, PAGE_SIZE * 20)
    mapped, touch, unmap = host_phase_events("read-touch", 32 * PAGE_SIZE, pat, 2)
    assert mapped == {"map_call": 1} and unmap["pte_clear"] == 32
    assert touch == {"tlb_miss": 2, "fault": 2, "pte_write": 2, "around_pte": 30}
    assert model_events({"ptes_written": 32, "around_ptes": 30, "faults": 2})["pte_write"] == 2
    mapped, touch, _ = host_phase_events("populate", 32 * PAGE_SIZE, pat, 0)
    assert mapped == {"map_call": 1, "fill_call": 1, "pte_write": 32} and touch == {"tlb_miss": 2}


def test_ranking_rule_counts_ties_by_the_hosts_spread() -> None:
    fast, slow = spread([90, 95, 100, 105, 110]), spread([190, 195, 200, 205, 210])
    assert model_agrees(1, 2, fast, slow) and not model_agrees(2, 1, fast, slow)   # host: fault wins
    tie_f, tie_p = spread([95, 98, 100, 102, 105]), spread([97, 99, 101, 103, 104])
    lo, hi = tie_f.q1 / tie_p.q3, tie_f.q3 / tie_p.q1
    assert model_agrees(100, 100, tie_f, tie_p) and model_agrees(100 * hi, 100, tie_f, tie_p)
    assert not model_agrees(100 * hi * 1.05, 100, tie_f, tie_p) and not model_agrees(100 * lo * 0.95, 100, tie_f, tie_p)
