"""Fault handlers: Python callbacks (vm_ops->fault) and the C built-ins, checked in raw PTEs."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import (
    PAGE_SIZE,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
    BadPageError,
    FaultHandlerSigbus,
    HandlerError,
    Page,
    VmFault,
    VmFlags,
    vmf_insert_pfn,
)
from dmamap.testing import pagetable

MiB = 1 << 20


def test_python_handler_returns_page(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A handler returning a RAM Page gets one call per page, with the page-aligned address, pgoff and access
    kind; the PTE maps that page (normal, not special) and takes a reference."""
    pages = [machine.alloc_pages() for _ in range(4)]
    for i, p in enumerate(pages):
        machine.phys_write(p.phys_addr, f"page{i}".encode())
    seen: list[VmFault] = []

    def fault(vmf: VmFault) -> Page:
        seen.append(vmf)
        return pages[vmf.pgoff]

    vma = mm.mmap(4 * PAGE_SIZE)
    vma.set_fault_handler(fault)
    assert mm.read(vma.start + 2 * PAGE_SIZE + 0x10, 1) == b"\0"
    assert mm.read(vma.start + 2 * PAGE_SIZE, 5) == b"page2"
    mm.write(vma.start + 3 * PAGE_SIZE + 5, b"!")
    assert [(v.address, v.pgoff, v.write, v.vma is vma) for v in seen] == [
        (vma.start + 2 * PAGE_SIZE, 2, False, True), (vma.start + 3 * PAGE_SIZE, 3, True, True)]
    assert mm.stats.faults == 2
    for i in (2, 3):
        leaf = pagetable.compare(mm, vma.start + i * PAGE_SIZE)
        assert leaf is not None and leaf.pfn == pages[i].pfn and not leaf.special and leaf.writable
        assert (pages[i].refcount, pages[i].mapcount) == (2, 1)
    assert machine.phys_read(pages[3].phys_addr, 6) == b"page3!"
    assert pagetable.walk(machine, mm.root, vma.start) is None


def test_python_handler_inserts_pfn(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A handler that calls vmf_insert_pfn for SRAM and returns VM_FAULT_NOPAGE maps a special PTE."""
    sram_pfn = machine.sram_base >> 12
    machine.phys_write(machine.sram_base + PAGE_SIZE, b"sram-data")
    vma = mm.mmap(2 * PAGE_SIZE, flags=VmFlags.VM_PFNMAP | VmFlags.VM_IO)
    vma.set_fault_handler(lambda vmf: vmf_insert_pfn(vmf.vma, vmf.address, sram_pfn + vmf.pgoff))
    assert mm.read(vma.start + PAGE_SIZE, 9) == b"sram-data"
    leaf = pagetable.compare(mm, vma.start + PAGE_SIZE)
    assert leaf is not None and leaf.pfn == sram_pfn + 1 and leaf.special
    assert vmf_insert_pfn(vma, vma.start, sram_pfn) == VM_FAULT_NOPAGE
    mm.write(vma.start, b"w")
    assert machine.phys_read(machine.sram_base, 1) == b"w"
    assert mm.stats.faults == 1


def test_python_handler_sigbus(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """VM_FAULT_SIGBUS, or VM_FAULT_NOPAGE/None without inserting anything, is FaultHandlerSigbus at the
    faulting address."""
    vma = mm.mmap(PAGE_SIZE)
    for result in (VM_FAULT_SIGBUS, VM_FAULT_NOPAGE, None):
        vma.set_fault_handler(lambda vmf, r=result: r)
        va = vma.start + 0x80
        with pytest.raises(FaultHandlerSigbus) as ei:
            mm.read(va, 1)
        assert isinstance(ei.value, dmamap.BusError)
        assert ei.value.addr == va and f"{va:#x}" in str(ei.value)
    assert pagetable.walk(machine, mm.root, vma.start) is None


class Boom(Exception):
    pass


def test_python_handler_exception_propagates(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """An exception inside the handler reaches the caller (chained in HandlerError; a DmamapError as itself;
    a BaseException such as KeyboardInterrupt untouched), leaves no PTE, and the next fault works."""
    page = machine.alloc_pages()
    boom = Boom("handler failed")
    vma = mm.mmap(PAGE_SIZE)

    def raising(vmf: VmFault) -> Page:
        raise boom

    vma.set_fault_handler(raising)
    before = pagetable.space_state(mm, access=True)
    with pytest.raises(HandlerError) as ei:
        mm.read(vma.start, 1)
    assert ei.value.__cause__ is boom and "handler failed" in str(ei.value)
    assert pagetable.space_state(mm, access=True) == before

    def bad_insert(vmf: VmFault) -> int:
        return vmf_insert_pfn(vmf.vma, vmf.address, page.pfn)   # plain VMA: VmaKindError inside the handler

    vma.set_fault_handler(bad_insert)
    with pytest.raises(dmamap.VmaKindError):
        mm.read(vma.start, 1)

    def interrupted(vmf: VmFault) -> Page:
        raise KeyboardInterrupt

    vma.set_fault_handler(interrupted)
    with pytest.raises(KeyboardInterrupt):
        mm.read(vma.start, 1)
    assert pagetable.space_state(mm, access=True) == before

    vma.set_fault_handler(lambda vmf: page)
    mm.read(vma.start, 1)
    leaf = pagetable.walk(machine, mm.root, vma.start)
    assert leaf is not None and leaf.pfn == page.pfn


def test_python_handler_bad_return(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A handler returning something that is not a Page or a VM_FAULT code is an error, not a mapping."""
    vma = mm.mmap(PAGE_SIZE)
    vma.set_fault_handler(lambda vmf: "nonsense")
    with pytest.raises(dmamap.InvalidArgumentError):
        mm.read(vma.start, 1)
    assert pagetable.walk(machine, mm.root, vma.start) is None


def test_private_write_fault_copies_handler_page(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A write fault in a private mapping whose handler returns a page maps a copy, leaving the page alone."""
    page = machine.alloc_pages()
    machine.phys_write(page.phys_addr, b"shared")
    vma = mm.mmap(PAGE_SIZE, shared=False)
    vma.set_fault_handler(lambda vmf: page)
    mm.write(vma.start, b"S")
    leaf = pagetable.compare(mm, vma.start)
    assert leaf is not None and leaf.pfn != page.pfn and leaf.writable
    assert mm.read(vma.start, 6) == b"Shared"
    assert machine.phys_read(page.phys_addr, 6) == b"shared"
    assert (page.refcount, page.mapcount) == (1, 0)
    assert mm.stats.cow_faults == 1


# ---- the C built-ins ----

def test_builtin_page_handler_scatter_gather(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """The "page" handler over three discontiguous chunks, starting at chunk page 2, maps each VMA page to the
    right pfn with page references, one fault per page."""
    chunks = [machine.alloc_pages(3), machine.alloc_pages(1), machine.alloc_pages(4)]
    machine.alloc_pages()   # keep chunks apart
    flat = [c.pfn + i for c, n in zip(chunks, (3, 1, 4), strict=True) for i in range(n)]
    vma = mm.mmap(6 * PAGE_SIZE)
    vma.set_builtin_fault("page", [(c.pfn, n) for c, n in zip(chunks, (3, 1, 4), strict=True)], first_page=2)
    mm.touch(vma.start, 6)
    assert mm.stats.faults == 6
    for i in range(6):
        leaf = pagetable.compare(mm, vma.start + i * PAGE_SIZE)
        assert leaf is not None and leaf.pfn == flat[2 + i] and not leaf.special
        assert Page(machine, flat[2 + i]).mapcount == 1
    assert Page(machine, flat[0]).mapcount == 0


def test_builtin_pfn_handler(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """The "pfn" handler maps SRAM (no page descriptors) with special PTEs."""
    sram_pfn = machine.sram_base >> 12
    vma = mm.mmap(4 * PAGE_SIZE, flags=VmFlags.VM_PFNMAP)
    vma.set_builtin_fault("pfn", [(sram_pfn + 10, 4)])
    mm.write(vma.start + 3 * PAGE_SIZE, b"tail")
    assert machine.phys_read(machine.sram_base + 13 * PAGE_SIZE, 4) == b"tail"
    leaf = pagetable.compare(mm, vma.start + 3 * PAGE_SIZE)
    assert leaf is not None and leaf.pfn == sram_pfn + 13 and leaf.special
    assert mm.count_present(vma.start, len(vma)) == 1


def test_builtin_fault_around(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """fault_around=16: one read fault maps the whole aligned 16-page window, in one fault."""
    run = machine.alloc_pages(64)
    vma = mm.mmap(64 * PAGE_SIZE, addr=0x1000_0000)
    vma.set_builtin_fault("page", [(run.pfn, 64)], fault_around=16)
    mm.read(vma.start + 20 * PAGE_SIZE, 1)
    assert mm.stats.faults == 1
    assert mm.count_present(vma.start, len(vma)) == 16
    for i in range(64):
        leaf = pagetable.compare(mm, vma.start + i * PAGE_SIZE)
        assert (leaf is not None) == (16 <= i < 32)
        if leaf is not None:
            assert leaf.pfn == run.pfn + i


def test_builtin_large_pfn_fault(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """large=True with a 2 MiB-aligned chunk: one fault maps a 2 MiB entry; "page" mode stays at 4 KiB."""
    pa = machine.ram_base + 4 * MiB
    vma = mm.mmap(2 * MiB, flags=VmFlags.VM_PFNMAP, align=2 * MiB)
    vma.set_builtin_fault("pfn", [(pa >> 12, 512)], large=True)
    mm.read(vma.start + 0x12345, 1)
    leaf = pagetable.compare(mm, vma.start + 0x12345)
    assert leaf is not None and leaf.page_size == 2 * MiB and leaf.pa == pa + 0x12345 and leaf.special
    assert mm.stats.ptes_written == 1
    run = machine.alloc_pages(512, align=512)
    pv = mm.mmap(2 * MiB, align=2 * MiB)
    pv.set_builtin_fault("page", [(run.pfn, 512)], large=True)
    mm.read(pv.start + 0x12345, 1)
    leaf = pagetable.compare(mm, pv.start + 0x12345)
    assert leaf is not None and leaf.page_size == PAGE_SIZE and leaf.pfn == run.pfn + 0x12


def test_builtin_fault_past_buffer_is_sigbus(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A VMA longer than its chunks: touching past the end is FaultHandlerSigbus, not a mapping."""
    run = machine.alloc_pages(2)
    vma = mm.mmap(4 * PAGE_SIZE)
    vma.set_builtin_fault("page", [(run.pfn, 2)])
    mm.read(vma.start + PAGE_SIZE, 1)
    va = vma.start + 2 * PAGE_SIZE + 1
    with pytest.raises(FaultHandlerSigbus) as ei:
        mm.read(va, 1)
    assert ei.value.addr == va and f"{va:#x}" in str(ei.value)
    assert pagetable.walk(machine, mm.root, vma.start + 2 * PAGE_SIZE) is None


def test_builtin_page_handler_rejects_free_page(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """The "page" handler over a freed page is BadPageError (the page descriptor is not handed out)."""
    page = machine.alloc_pages()
    machine.free_pages(page)
    vma = mm.mmap(PAGE_SIZE)
    vma.set_builtin_fault("page", [(page.pfn, 1)])
    with pytest.raises(BadPageError):
        mm.read(vma.start, 1)


def test_builtin_fault_arguments_checked(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Bad built-in handler arguments are InvalidArgumentError: unknown kind, no chunks, empty chunk,
    first_page past the chunks, fault_around above 512."""
    vma = mm.mmap(PAGE_SIZE)
    run = machine.alloc_pages()
    for kwargs in ({"kind": "bogus", "chunks": [(run.pfn, 1)]}, {"kind": "page", "chunks": []},
                   {"kind": "page", "chunks": [(run.pfn, 0)]},
                   {"kind": "page", "chunks": [(run.pfn, 1)], "first_page": 1},
                   {"kind": "pfn", "chunks": [(run.pfn, 1)], "fault_around": 513}):
        with pytest.raises(dmamap.InvalidArgumentError):
            vma.set_builtin_fault(**kwargs)   # type: ignore[arg-type]
    with pytest.raises(dmamap.NoFaultHandlerError):
        mm.read(vma.start, 1)
