"""The rules the emulator enforces: each raises its own error class, which is-a DmamapError and the builtin
errors.py says it is, names the address, and leaves the page tables (raw memory of every table page) and the
counters exactly as they were."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import pytest

import dmamap
from dmamap import (
    PAGE_SIZE,
    AlignmentFault,
    BadPageError,
    CowFaultError,
    DmamapError,
    MachineClosedError,
    MemtypeConflictError,
    NoFaultHandlerError,
    OutOfMemoryError,
    Page,
    PgProt,
    PhysicalAddressError,
    ProtectionFault,
    PteBusyError,
    SegmentationFault,
    VirtToPageError,
    VmaKindError,
    VmaNotMappedError,
    VmFlags,
    remap_pfn_range,
    vm_insert_page,
    vmf_insert_mixed,
    vmf_insert_pfn,
)
from dmamap.testing import pagetable

FAR_PFN = 0x40_0000_0000 >> 12     # no region: pfn_valid() is false
MiB = 1 << 20

#: The builtin exception each rule's class claims in dmamap/errors.py (None: only DmamapError).
CLAIMED: dict[type[DmamapError], type[BaseException] | None] = {
    BadPageError: ValueError,
    VmaKindError: ValueError,
    CowFaultError: None,
    PteBusyError: None,
    VirtToPageError: ValueError,
    NoFaultHandlerError: None,
    SegmentationFault: None,
    ProtectionFault: PermissionError,
    AlignmentFault: None,
    PhysicalAddressError: ValueError,
    OutOfMemoryError: MemoryError,
    VmaNotMappedError: LookupError,
    MachineClosedError: RuntimeError,
    MemtypeConflictError: None,
}


def builtin_bases(cls: type[BaseException]) -> set[type]:
    """The builtin exception classes ``cls`` derives from, beyond Exception itself."""
    return {c for c in cls.__mro__ if c.__module__ == "builtins"} - {object, BaseException, Exception}


def raises(cls: type[DmamapError], fn: Callable[[], Any], addr: int | None) -> DmamapError:
    """Run ``fn``; it must raise exactly ``cls``, carrying and naming ``addr`` (unless None)."""
    with pytest.raises(DmamapError) as ei:
        fn()
    exc = ei.value
    assert type(exc) is cls, f"expected {cls.__name__}, got {type(exc).__name__}: {exc}"
    claimed = CLAIMED[cls]
    assert builtin_bases(type(exc)) == (builtin_bases(claimed) if claimed else set()), f"{cls.__name__} bases"
    if claimed is not None:
        assert isinstance(exc, claimed)
    if addr is not None:
        assert exc.addr == addr, f"{cls.__name__}.addr is {exc.addr:#x}, expected {addr:#x}"
        assert f"{addr:#x}" in str(exc), f"message does not name {addr:#x}: {exc}"
    return exc


def unchanged(mm: dmamap.AddressSpace, cls: type[DmamapError], fn: Callable[[], Any], addr: int | None, *,
              access: bool = False) -> DmamapError:
    """``raises`` plus: the raw table memory and the counters are the same before and after."""
    before = pagetable.space_state(mm, access=access)
    exc = raises(cls, fn, addr)
    after = pagetable.space_state(mm, access=access)
    assert after[0] == before[0], "page-table memory changed"
    assert after[1] == before[1], f"address-space counters changed: {before[1]} -> {after[1]}"
    assert after[2] == before[2], f"machine counters changed: {before[2]} -> {after[2]}"
    return exc


def test_claimed_builtins_match_errors_module() -> None:
    """The table above is what errors.py declares (guards the test against drift)."""
    for cls, claimed in CLAIMED.items():
        assert issubclass(cls, DmamapError)
        assert builtin_bases(cls) == (builtin_bases(claimed) if claimed else set()), cls.__name__
        assert getattr(builtins, claimed.__name__) is claimed if claimed else True


# ---- a fault handler that returns a page descriptor must return RAM ----

def _anon_page(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> Page:
    """An anonymous page, made by a private write fault (COW)."""
    priv = mm.mmap(PAGE_SIZE, shared=False)
    src = machine.alloc_pages()
    priv.set_builtin_fault("page", [(src.pfn, 1)])
    mm.write(priv.start, b"x")
    t = mm.translate(priv.start)
    assert t is not None and t.pfn != src.pfn
    page = machine.pfn_to_page(t.pfn)
    assert page.flags["anon"]
    return page


@pytest.mark.parametrize("kind", ["anon", "free", "non-ram", "sram", "table"])
def test_fault_handler_page_must_be_ram(machine: dmamap.Machine, mm: dmamap.AddressSpace, kind: str) -> None:
    """A Python fault handler handing back an anon, free, page-table or non-RAM page: BadPageError, no PTE."""
    if kind == "anon":
        page = _anon_page(machine, mm)
    elif kind == "free":
        page = machine.alloc_pages()
        machine.free_pages(page)
    elif kind == "non-ram":
        page = Page(machine, FAR_PFN)
    elif kind == "sram":
        page = Page(machine, machine.sram_base >> 12)
    else:
        page = Page(machine, mm.root >> 12)
    vma = mm.mmap(4 * PAGE_SIZE)
    vma.set_fault_handler(lambda vmf: page)
    info = (page.refcount, page.mapcount) if machine.pfn_valid(page.pfn) else None
    va = vma.start + PAGE_SIZE
    unchanged(mm, BadPageError, lambda: mm.read(va + 0x10, 4), va, access=True)
    assert pagetable.walk(machine, mm.root, va) is None
    if info is not None:
        assert (page.refcount, page.mapcount) == info


def test_builtin_page_fault_on_non_ram(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """The C "page" handler given SRAM (no page descriptors) raises BadPageError instead of mapping it."""
    vma = mm.mmap(2 * PAGE_SIZE)
    vma.set_builtin_fault("page", [(machine.sram_base >> 12, 2)])
    unchanged(mm, BadPageError, lambda: mm.read(vma.start, 1), vma.start, access=True)


def test_vm_insert_page_rejects_non_ram(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """vm_insert_page of a page that is not RAM, or is free: BadPageError."""
    vma = mm.mmap(2 * PAGE_SIZE)
    unchanged(mm, BadPageError, lambda: vm_insert_page(vma, vma.start, Page(machine, FAR_PFN)), vma.start)
    freed = machine.alloc_pages()
    machine.free_pages(freed)
    unchanged(mm, BadPageError, lambda: vm_insert_page(vma, vma.start + PAGE_SIZE, freed), vma.start + PAGE_SIZE)
    with pytest.raises(BadPageError):
        machine.pfn_to_page(FAR_PFN)


# ---- PFN insertion only into VM_PFNMAP / VM_MIXEDMAP, never both ----

def test_pfn_insert_needs_pfnmap_or_mixedmap(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """vmf_insert_pfn into a plain VMA is refused; into VM_PFNMAP and (non-RAM) VM_MIXEDMAP it works."""
    plain = mm.mmap(2 * PAGE_SIZE)
    va = plain.start + PAGE_SIZE
    unchanged(mm, VmaKindError, lambda: vmf_insert_pfn(plain, va, FAR_PFN), va)
    pfnmap = mm.mmap(PAGE_SIZE, flags=VmFlags.VM_PFNMAP)
    vmf_insert_pfn(pfnmap, pfnmap.start, FAR_PFN)
    leaf = pagetable.walk(machine, mm.root, pfnmap.start)
    assert leaf is not None and leaf.pfn == FAR_PFN and leaf.special
    mixed = mm.mmap(2 * PAGE_SIZE, flags=VmFlags.VM_MIXEDMAP)
    vmf_insert_pfn(mixed, mixed.start, FAR_PFN + 1)
    ram = machine.alloc_pages()
    unchanged(mm, VmaKindError, lambda: vmf_insert_pfn(mixed, mixed.start + PAGE_SIZE, ram.pfn),
              mixed.start + PAGE_SIZE)


def test_never_both_flags(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """No VMA can become VM_PFNMAP and VM_MIXEDMAP: not at mmap, not by vm_flags_set, not by remapping a
    mixed map or inserting pages into a PFN map."""
    both = VmFlags.VM_PFNMAP | VmFlags.VM_MIXEDMAP
    fixed = 0x3000_0000
    nvmas = len(mm.vmas)
    unchanged(mm, VmaKindError, lambda: mm.mmap(PAGE_SIZE, flags=both, addr=fixed), fixed)
    assert len(mm.vmas) == nvmas and mm.find_vma(fixed) is None

    pfnmap = mm.mmap(2 * PAGE_SIZE)
    remap_pfn_range(pfnmap, pfnmap.start, FAR_PFN, PAGE_SIZE, pfnmap.vm_page_prot)
    assert pfnmap.pfnmap and not pfnmap.mixedmap
    unchanged(mm, VmaKindError, lambda: pfnmap.vm_flags_set(VmFlags.VM_MIXEDMAP), pfnmap.start)
    assert not pfnmap.mixedmap
    page = machine.alloc_pages()
    va = pfnmap.start + PAGE_SIZE
    unchanged(mm, VmaKindError, lambda: vm_insert_page(pfnmap, va, page), va)
    assert (page.refcount, page.mapcount) == (1, 0)

    mixed = mm.mmap(2 * PAGE_SIZE)
    vm_insert_page(mixed, mixed.start, page)
    assert mixed.mixedmap and not mixed.pfnmap
    unchanged(mm, VmaKindError,
              lambda: remap_pfn_range(mixed, mixed.start + PAGE_SIZE, FAR_PFN, PAGE_SIZE, mixed.vm_page_prot),
              mixed.start + PAGE_SIZE)
    assert not mixed.pfnmap


def test_vmf_insert_mixed_needs_mixedmap(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """vmf_insert_mixed into a VMA without VM_MIXEDMAP is refused."""
    vma = mm.mmap(PAGE_SIZE)
    unchanged(mm, VmaKindError, lambda: vmf_insert_mixed(vma, vma.start, FAR_PFN), vma.start)


def test_builtin_pfn_fault_into_plain_vma(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """The C "pfn" handler on a VMA that is neither VM_PFNMAP nor VM_MIXEDMAP raises VmaKindError."""
    vma = mm.mmap(PAGE_SIZE)
    vma.set_builtin_fault("pfn", [(machine.sram_base >> 12, 1)])
    unchanged(mm, VmaKindError, lambda: mm.read(vma.start + 8, 8), vma.start + 8, access=True)


# ---- private (COW) write faults ----

def test_cow_write_on_non_ram_is_sigbus(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A private writable mapping of SRAM reads fine; a write is SIGBUS (CowFaultError), never a copy."""
    sram_pfn = machine.sram_base >> 12
    machine.phys_write(machine.sram_base, b"sram")
    vma = mm.mmap(2 * PAGE_SIZE, shared=False)
    remap_pfn_range(vma, vma.start, sram_pfn, len(vma), vma.vm_page_prot)
    assert mm.read(vma.start, 4) == b"sram"
    va = vma.start + PAGE_SIZE + 3
    unchanged(mm, CowFaultError, lambda: mm.write(va, b"!"), va, access=True)
    assert mm.stats.cow_faults == 0
    assert machine.phys_read(machine.sram_base + PAGE_SIZE + 3, 1) == b"\0"


def test_cow_fault_from_pfn_handler_on_non_ram(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A first-touch private write through the C "pfn" handler on SRAM is SIGBUS too."""
    vma = mm.mmap(PAGE_SIZE, shared=False, flags=VmFlags.VM_PFNMAP)
    vma.set_builtin_fault("pfn", [(machine.sram_base >> 12, 1)])
    unchanged(mm, CowFaultError, lambda: mm.write(vma.start, b"!"), vma.start, access=True)


def test_cow_write_on_ram_copies(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A private write fault on RAM copies the page: the PTE moves to a new anonymous, writable page holding the
    old contents plus the write, the original is untouched; unmapping frees the copy."""
    src = machine.alloc_pages()
    machine.phys_write(src.phys_addr, b"original")
    used = machine.stats.ram_pages_used
    vma = mm.mmap(PAGE_SIZE, shared=False)
    remap_pfn_range(vma, vma.start, src.pfn, PAGE_SIZE, vma.vm_page_prot)
    before = pagetable.walk(machine, mm.root, vma.start)
    assert before is not None and before.pfn == src.pfn and not before.writable
    mm.write(vma.start, b"O")
    after = pagetable.compare(mm, vma.start)
    assert after is not None and after.pfn != src.pfn and after.writable and not after.special
    assert mm.read(vma.start, 8) == b"Original"
    assert machine.phys_read(src.phys_addr, 8) == b"original"
    assert machine.phys_read(after.pa, 8) == b"Original"
    assert mm.stats.cow_faults == 1
    copy = machine.pfn_to_page(after.pfn)
    assert copy.flags["anon"] and (copy.refcount, copy.mapcount) == (1, 1)
    assert machine.stats.ram_pages_used == used + 1 + (mm.stats.table_pages - 1)
    mm.munmap(vma)
    assert machine.stats.ram_pages_used == used


# ---- prefault only into empty PTEs; partial remaps roll back ----

def test_partial_remap_rolls_back(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """remap_pfn_range over a range whose 6th PTE is taken fails with PteBusyError at that page; the five PTEs
    it had written are empty again, the busy one is untouched, tables and counters are at baseline."""
    vma = mm.mmap(10 * PAGE_SIZE)
    busy = vma.start + 5 * PAGE_SIZE
    remap_pfn_range(vma, busy, FAR_PFN + 100, PAGE_SIZE, vma.vm_page_prot)
    unchanged(mm, PteBusyError, lambda: remap_pfn_range(vma, vma.start, FAR_PFN, len(vma), vma.vm_page_prot), busy)
    for i in range(10):
        leaf = pagetable.walk(machine, mm.root, vma.start + i * PAGE_SIZE)
        if i == 5:
            assert leaf is not None and leaf.pfn == FAR_PFN + 100
        else:
            assert leaf is None


def test_partial_remap_frees_new_tables(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A remap that had to create a page-table page before hitting a busy PTE gives that table back."""
    vma = mm.mmap(4 * MiB, align=2 * MiB)
    busy = vma.start + 2 * MiB + PAGE_SIZE
    remap_pfn_range(vma, busy, FAR_PFN, PAGE_SIZE, vma.vm_page_prot)
    tables = mm.stats.table_pages
    unchanged(mm, PteBusyError, lambda: remap_pfn_range(vma, vma.start, FAR_PFN + 1, len(vma), vma.vm_page_prot),
              busy)
    assert mm.stats.table_pages == tables == len(pagetable.table_pages(machine, mm.root))
    assert mm.count_present(vma.start, len(vma)) == 1


def test_remap_into_large_block_is_busy(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A 4 KiB remap under an existing 2 MiB entry is PteBusyError and leaves the block whole."""
    vma = mm.mmap(4 * MiB, align=2 * MiB)
    remap_pfn_range(vma, vma.start, FAR_PFN, 2 * MiB, vma.vm_page_prot, large=True)
    va = vma.start + 3 * PAGE_SIZE
    unchanged(mm, PteBusyError, lambda: remap_pfn_range(vma, va, FAR_PFN + 9999, PAGE_SIZE, vma.vm_page_prot), va)
    leaf = pagetable.walk(machine, mm.root, va)
    assert leaf is not None and leaf.page_size == 2 * MiB and leaf.pfn == FAR_PFN + 3


def test_insert_into_busy_pte(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """vm_insert_page and vmf_insert_pfn of another pfn into a taken PTE: PteBusyError; the same pfn again is
    VM_FAULT_NOPAGE with nothing changed."""
    vma = mm.mmap(2 * PAGE_SIZE, flags=VmFlags.VM_PFNMAP)
    vmf_insert_pfn(vma, vma.start, FAR_PFN)
    state = pagetable.space_state(mm)
    assert vmf_insert_pfn(vma, vma.start, FAR_PFN) == dmamap.VM_FAULT_NOPAGE
    assert pagetable.space_state(mm) == state
    unchanged(mm, PteBusyError, lambda: vmf_insert_pfn(vma, vma.start, FAR_PFN + 1), vma.start)
    mixed = mm.mmap(PAGE_SIZE)
    a, b = machine.alloc_pages(), machine.alloc_pages()
    vm_insert_page(mixed, mixed.start, a)
    unchanged(mm, PteBusyError, lambda: vm_insert_page(mixed, mixed.start, b), mixed.start)
    assert (b.refcount, b.mapcount) == (1, 0)


# ---- virt_to_page only on direct-mapped RAM ----

def test_virt_to_page_only_direct_map(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """virt_to_page works on the direct map (round-trips page_address) and raises VirtToPageError elsewhere:
    vmalloc/remap addresses, user addresses, just past the end of RAM."""
    page = machine.alloc_pages()
    kaddr = machine.page_address(page)
    assert dmamap.virt_to_page(kaddr) == page
    assert dmamap.virt_to_page(int(kaddr) + 123, machine=machine) == page
    kvma = machine.kernel.mmap(PAGE_SIZE)
    remap_pfn_range(kvma, kvma.start, page.pfn, PAGE_SIZE, PgProt.make(machine.isa, write=True, user=False))
    user = mm.mmap(PAGE_SIZE)
    for bad in (kvma.start, user.start, machine.page_offset + machine.ram_size, machine.page_offset - PAGE_SIZE):
        unchanged(machine.kernel, VirtToPageError, lambda bad=bad: dmamap.virt_to_page(bad, machine=machine), bad)
        raises(VirtToPageError, lambda bad=bad: machine.virt_to_phys(bad), bad)
    sram = machine.sram_base
    raises(VirtToPageError, lambda: machine.phys_to_virt(sram), sram)


# ---- access faults ----

def test_no_fault_handler(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A not-present page in a VMA without a handler is NoFaultHandlerError (a SIGBUS), also after removing
    a handler."""
    vma = mm.mmap(2 * PAGE_SIZE)
    va = vma.start + PAGE_SIZE + 0x42
    exc = unchanged(mm, NoFaultHandlerError, lambda: mm.read(va, 1), va, access=True)
    assert isinstance(exc, dmamap.BusError)
    vma.set_fault_handler(lambda vmf: None)
    vma.set_fault_handler(None)
    unchanged(mm, NoFaultHandlerError, lambda: mm.write(va, b"x"), va, access=True)


def test_segmentation_fault(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """No VMA at the address (a gap, the guard page after a VMA, beyond the user range): SegmentationFault."""
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, machine.sram_base >> 12, PAGE_SIZE, vma.vm_page_prot)
    for va in (vma.end, vma.start - 1, 0x7000_0000_0000 if machine.isa == "x86_64" else 0x70_0000_0000):
        unchanged(mm, SegmentationFault, lambda va=va: mm.read(va, 1), va, access=True)
        unchanged(mm, SegmentationFault, lambda va=va: mm.write(va, b"z"), va, access=True)
    high = 1 << 47 if machine.isa == "x86_64" else 1 << 39
    unchanged(mm, SegmentationFault, lambda: mm.read(high, 1), high, access=True)
    # an access that runs off the end of a mapping faults at the first unmapped byte
    unchanged(mm, SegmentationFault, lambda: mm.read(vma.end - 2, 4), vma.end, access=True)


def test_protection_faults(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Write to a read-only mapping, access to PROT_NONE, a write fault in a VMA without VM_WRITE and a user
    access to a kernel-only PTE are all ProtectionFault (a PermissionError)."""
    sram_pfn = machine.sram_base >> 12
    ro = mm.mmap(PAGE_SIZE, prot="r")
    remap_pfn_range(ro, ro.start, sram_pfn, PAGE_SIZE, ro.vm_page_prot)
    assert mm.read(ro.start, 1) == b"\0"
    unchanged(mm, ProtectionFault, lambda: mm.write(ro.start + 7, b"w"), ro.start + 7, access=True)
    none = mm.mmap(PAGE_SIZE, prot="")
    remap_pfn_range(none, none.start, sram_pfn + 1, PAGE_SIZE, none.vm_page_prot)
    unchanged(mm, ProtectionFault, lambda: mm.read(none.start, 1), none.start, access=True)
    calls: list[int] = []
    lazy = mm.mmap(PAGE_SIZE, prot="r")
    lazy.set_fault_handler(lambda vmf: calls.append(vmf.address))
    unchanged(mm, ProtectionFault, lambda: mm.write(lazy.start, b"w"), lazy.start, access=True)
    assert calls == []
    kern = mm.mmap(PAGE_SIZE)
    remap_pfn_range(kern, kern.start, sram_pfn + 2, PAGE_SIZE, PgProt.make(machine.isa, write=True, user=False))
    unchanged(mm, ProtectionFault, lambda: mm.read(kern.start, 1), kern.start, access=True)


@pytest.mark.parametrize("cache", ["DEVICE_nGnRnE", "DEVICE_nGnRE"])
def test_alignment_fault_on_device_memory(cache: str) -> None:
    """AArch64: an unaligned access to Device memory is an AlignmentFault; aligned ones and unaligned ones to
    Normal non-cacheable memory are fine."""
    with dmamap.Machine("aarch64", ram=16 * MiB, sram=MiB) as m:
        mm = m.new_address_space()
        dev = mm.mmap(PAGE_SIZE)
        remap_pfn_range(dev, dev.start, m.sram_base >> 12, PAGE_SIZE, dev.vm_page_prot.with_cache(cache))
        mm.write32(dev.start + 4, 0x11223344)
        assert mm.read32(dev.start + 4) == 0x11223344
        for va, fn in ((dev.start + 2, lambda: mm.read32(dev.start + 2)),
                       (dev.start + 1, lambda: mm.write16(dev.start + 1, 1)),
                       (dev.start + 4, lambda: mm.read64(dev.start + 4))):
            unchanged(mm, AlignmentFault, fn, va, access=True)
        nc = mm.mmap(PAGE_SIZE)
        remap_pfn_range(nc, nc.start, (m.sram_base >> 12) + 1, PAGE_SIZE, dmamap.pgprot_writecombine(nc.vm_page_prot))
        mm.write32(nc.start + 2, 0xAABBCCDD)
        assert mm.read32(nc.start + 2) == 0xAABBCCDD


def test_no_alignment_fault_on_x86_uc() -> None:
    """x86-64 has no alignment check for UC memory: unaligned accesses just work."""
    with dmamap.Machine("x86_64", ram=16 * MiB, sram=MiB) as m:
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        remap_pfn_range(vma, vma.start, m.sram_base >> 12, PAGE_SIZE, dmamap.pgprot_noncached(vma.vm_page_prot))
        mm.write32(vma.start + 2, 0x01020304)
        assert mm.read32(vma.start + 2) == 0x01020304


# ---- physical memory and RAM ----

def test_physical_address_errors(machine: dmamap.Machine) -> None:
    """phys_read/phys_write outside memory regions raise PhysicalAddressError at the first bad address, and a
    failed write changes nothing."""
    ram_end = machine.ram_base + machine.ram_size
    io = next(r for r in machine.memory_map if r.kind == "io-window")
    raises(PhysicalAddressError, lambda: machine.phys_read(0x7F_0000_0000, 8), 0x7F_0000_0000)
    raises(PhysicalAddressError, lambda: machine.phys_read(io.base, 4), io.base)
    raises(PhysicalAddressError, lambda: machine.phys_read(ram_end - 4, 8), ram_end)
    before = machine.phys_read(ram_end - 4, 4)
    raises(PhysicalAddressError, lambda: machine.phys_write(0x7F_0000_0000, b"abc"), 0x7F_0000_0000)
    assert machine.phys_read(ram_end - 4, 4) == before


def test_out_of_memory(machine: dmamap.Machine) -> None:
    """Asking for more pages than exist, or than are free, is OutOfMemoryError (a MemoryError) and allocates
    nothing."""
    st = machine.stats
    exc = raises(OutOfMemoryError, lambda: machine.alloc_pages(st.ram_pages + 1), None)
    assert isinstance(exc, MemoryError)
    assert machine.stats == st
    free = st.ram_pages - st.ram_pages_used
    rest = machine.alloc_pages(free)
    st = machine.stats
    assert st.ram_pages_used == st.ram_pages
    raises(OutOfMemoryError, lambda: machine.alloc_pages(1), None)
    assert machine.stats == st
    machine.free_pages(rest, free)
    assert machine.stats.ram_pages_used == st.ram_pages - free


def _exhaust(machine: dmamap.Machine, leave: int) -> None:
    st = machine.stats
    machine.alloc_pages(st.ram_pages - st.ram_pages_used - leave)


def test_out_of_memory_for_page_tables_rolls_back(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A remap that runs out of RAM for its page tables part-way leaves no half-built tables behind."""
    vma = mm.mmap(PAGE_SIZE)
    _exhaust(machine, 1)     # room for one table page; the remap needs two (x86: three)
    unchanged(mm, OutOfMemoryError,
              lambda: remap_pfn_range(vma, vma.start, FAR_PFN, PAGE_SIZE, vma.vm_page_prot), None)
    assert machine.stats.ram_pages_used == machine.stats.ram_pages - 1


def test_out_of_memory_in_cow_fault(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """A private write fault that finds no free page for the copy is OutOfMemoryError and maps nothing new."""
    src = machine.alloc_pages()
    vma = mm.mmap(PAGE_SIZE, shared=False)
    remap_pfn_range(vma, vma.start, src.pfn, PAGE_SIZE, vma.vm_page_prot)
    _exhaust(machine, 0)
    unchanged(mm, OutOfMemoryError, lambda: mm.write(vma.start, b"x"), None, access=True)
    leaf = pagetable.walk(machine, mm.root, vma.start)
    assert leaf is not None and leaf.pfn == src.pfn and not leaf.writable


# ---- stale VMAs and closed machines ----

def test_stale_vma(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """An unmapped VMA, or one of another address space, is VmaNotMappedError (a LookupError) for every
    primitive, even after its slot is reused by a new VMA, which stays untouched."""
    old = mm.mmap(PAGE_SIZE)
    start = old.start
    mm.munmap(old)
    assert not old.live
    new = mm.mmap(PAGE_SIZE, addr=start)
    assert new.start == start
    prot = new.vm_page_prot
    unchanged(mm, VmaNotMappedError, lambda: remap_pfn_range(old, start, FAR_PFN, PAGE_SIZE, prot), start)
    unchanged(mm, VmaNotMappedError, lambda: vmf_insert_pfn(old, start, FAR_PFN), start)
    page = machine.alloc_pages()
    unchanged(mm, VmaNotMappedError, lambda: vm_insert_page(old, start, page), start)
    unchanged(mm, VmaNotMappedError, lambda: dmamap.zap_vma_ptes(old, start, PAGE_SIZE), start)
    unchanged(mm, VmaNotMappedError, lambda: dmamap.change_protection(old, start, PAGE_SIZE, prot), start)
    unchanged(mm, VmaNotMappedError, lambda: mm.munmap(old), None)
    assert new.live and pagetable.walk(machine, mm.root, start) is None
    other = machine.new_address_space()
    unchanged(mm, VmaNotMappedError, lambda: other.munmap(new), new.start)
    assert new.live


def test_closed_machine(isa: str) -> None:
    """After close, every use of the machine, its address spaces and VMAs raises MachineClosedError (a
    RuntimeError); close is idempotent."""
    m = dmamap.Machine(isa, ram=16 * MiB)
    mm = m.new_address_space()
    vma = mm.mmap(PAGE_SIZE)
    page = m.alloc_pages()
    m.close()
    m.close()
    assert m.closed and mm.closed and not vma.live
    for fn in (lambda: m.phys_read(m.ram_base, 1), lambda: m.phys_write(m.ram_base, b"x"), lambda: m.stats,
               lambda: m.alloc_pages(), lambda: m.new_address_space(), lambda: m.pfn_valid(0), lambda: page.refcount,
               lambda: mm.read(vma.start, 1), lambda: mm.stats, lambda: mm.root, lambda: mm.mmap(PAGE_SIZE),
               lambda: remap_pfn_range(vma, vma.start, FAR_PFN, PAGE_SIZE, 0)):
        raises(MachineClosedError, fn, None)


# ---- conflicting cache types ----

def test_memtype_conflict(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """Mapping a physical range cached and uncached at once is refused (MemtypeConflictError) with nothing
    changed; after the first mapping goes, the second type is allowed."""
    a = mm.mmap(2 * PAGE_SIZE)
    remap_pfn_range(a, a.start, FAR_PFN, 2 * PAGE_SIZE, a.vm_page_prot)
    b = mm.mmap(PAGE_SIZE)
    uc = dmamap.pgprot_noncached(b.vm_page_prot)
    pa = (FAR_PFN + 1) << 12
    unchanged(mm, MemtypeConflictError, lambda: remap_pfn_range(b, b.start, FAR_PFN + 1, PAGE_SIZE, uc), pa)
    assert machine.memtype_lookup(pa) == a.vm_page_prot.cache
    mm.munmap(a)
    remap_pfn_range(b, b.start, FAR_PFN + 1, PAGE_SIZE, uc)
    assert machine.memtype_lookup(pa) == uc.cache
