"""Eight threads faulting one VMA at once leave exactly one correct PTE per page."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest

import dmamap
from dmamap import PAGE_SIZE, Page, VmFault, VmFlags, vmf_insert_pfn
from dmamap.testing import pagetable

THREADS = 8


def run_threads(worker: Callable[[int], None]) -> None:
    """Run worker(0..THREADS-1) on THREADS threads at once; none may hang."""
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a faulting thread hung"
NPAGES = 256


def hammer(mm: dmamap.AddressSpace, vma: dmamap.Vma, *, write: bool = False) -> None:
    """Every thread touches every page of ``vma``, each in its own random order, all released together."""
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        order = list(range(vma.nr_pages))
        random.Random(seed).shuffle(order)
        try:
            barrier.wait()
            for chunk in range(0, len(order), 16):
                mm.touch_list([vma.start + i * PAGE_SIZE + (seed * 8) % PAGE_SIZE for i in order[chunk:chunk + 16]],
                              write=write)
                mm.read(vma.start + order[chunk] * PAGE_SIZE, 8)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    run_threads(worker)
    assert not errors, errors


def check_one_pte_per_page(machine: dmamap.Machine, mm: dmamap.AddressSpace, vma: dmamap.Vma,
                           expect_pfn: Callable[[int], int], *, special: bool) -> None:
    """Raw memory: every page present exactly once, at the right pfn; counters match the page count."""
    pfns = []
    for i in range(vma.nr_pages):
        leaf = pagetable.compare(mm, vma.start + i * PAGE_SIZE)
        assert leaf is not None, f"page {i} not mapped"
        assert leaf.page_size == PAGE_SIZE and leaf.pfn == expect_pfn(i) and leaf.special == special
        pfns.append(leaf.pfn)
    assert len(set(pfns)) == vma.nr_pages
    st = mm.stats
    assert st.faults == vma.nr_pages
    assert st.ptes_written == vma.nr_pages
    assert st.ptes_cleared == 0
    assert mm.count_present(vma.start, len(vma)) == vma.nr_pages


@pytest.mark.parametrize("kind", ["page", "pfn"])
def test_builtin_handler_concurrent_faults(machine: dmamap.Machine, mm: dmamap.AddressSpace, kind: str) -> None:
    """The C handlers under 8 racing threads: one PTE per page, one fault per page, page refs exactly one."""
    if kind == "page":
        run = machine.alloc_pages(NPAGES)
        base = run.pfn
        vma = mm.mmap(NPAGES * PAGE_SIZE)
    else:
        base = machine.sram_base >> 12
        vma = mm.mmap(NPAGES * PAGE_SIZE, flags=VmFlags.VM_PFNMAP)
    vma.set_builtin_fault(kind, [(base, NPAGES)])
    hammer(mm, vma, write=True)
    check_one_pte_per_page(machine, mm, vma, lambda i: base + i, special=kind == "pfn")
    if kind == "page":
        assert all((Page(machine, base + i).refcount, Page(machine, base + i).mapcount) == (2, 1)
                   for i in range(NPAGES))
        mm.munmap(vma)
        assert all(Page(machine, base + i).mapcount == 0 for i in range(NPAGES))


@pytest.mark.parametrize("mode", ["page", "insert"])
def test_python_handler_concurrent_faults(machine: dmamap.Machine, mm: dmamap.AddressSpace, mode: str) -> None:
    """A Python handler under 8 racing threads is called exactly once per page."""
    calls: Counter[int] = Counter()
    lock = threading.Lock()
    if mode == "page":
        run = machine.alloc_pages(NPAGES)
        base = run.pfn
        vma = mm.mmap(NPAGES * PAGE_SIZE)
    else:
        base = machine.sram_base >> 12
        vma = mm.mmap(NPAGES * PAGE_SIZE, flags=VmFlags.VM_PFNMAP)

    def fault(vmf: VmFault) -> Page | int:
        with lock:
            calls[vmf.pgoff] += 1
        if mode == "page":
            return Page(machine, base + vmf.pgoff)
        return vmf_insert_pfn(vmf.vma, vmf.address, base + vmf.pgoff)

    vma.set_fault_handler(fault)
    hammer(mm, vma)
    assert calls == Counter(range(NPAGES))
    check_one_pte_per_page(machine, mm, vma, lambda i: base + i, special=mode == "insert")


def test_concurrent_faults_in_separate_vmas(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Threads faulting different VMAs of one address space share page-table pages without losing entries."""
    runs = [machine.alloc_pages(64) for _ in range(THREADS)]
    vmas = [mm.mmap(64 * PAGE_SIZE) for _ in range(THREADS)]
    for vma, run in zip(vmas, runs, strict=True):
        vma.set_builtin_fault("page", [(run.pfn, 64)])
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for _ in range(3):
                mm.touch(vmas[k].start, 64, write=True)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    run_threads(worker)
    assert not errors
    for vma, run in zip(vmas, runs, strict=True):
        for i in range(64):
            leaf = pagetable.walk(machine, mm.root, vma.start + i * PAGE_SIZE)
            assert leaf is not None and leaf.pfn == run.pfn + i
    assert mm.stats.faults == mm.stats.ptes_written == THREADS * 64
    assert len(pagetable.table_pages(machine, mm.root)) == mm.stats.table_pages
