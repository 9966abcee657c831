"""The rest of struct vm_operations_struct (issue 11): map_pages (mm/memory.c
do_read_fault -> do_fault_around), page_mkwrite (do_shared_fault /
wp_page_shared), huge_fault (__handle_mm_fault -> create_huge_pmd, with
mm/huge_memory.c vmf_insert_pfn_pmd), access (__access_remote_vm /
generic_access_phys), and VMA merging (mm/vma.c vma_merge)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import dmamap
from dmamap import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PMD_ORDER,
    VM_FAULT_FALLBACK,
    VM_FAULT_NOPAGE,
    VM_FAULT_SIGBUS,
    Page,
    Vma,
    VmFault,
    VmFlags,
    VmOperations,
)
from dmamap.errors import AddressRangeError, BusError, InvalidArgumentError, VmaKindError

P = PAGE_SIZE
PMD = 2 << 20
RAM = 32 << 20
ISAS = ("x86", "arm", "riscv")


@pytest.fixture(params=ISAS)
def m(request: pytest.FixtureRequest) -> Iterator[dmamap.Machine]:
    with dmamap.Machine(request.param, ram=RAM) as machine:
        yield machine


@pytest.fixture(autouse=True)
def _default_fault_around() -> Iterator[None]:
    yield
    dmamap.set_fault_around_bytes(64 << 10)


class Pages:
    """A driver object of RAM pages indexed by pgoff, with a ->fault returning
    them and a ->map_pages inserting the ones of a window (filemap_map_pages)."""

    def __init__(self, m: dmamap.Machine, n: int) -> None:
        self.pages = [m.alloc_pages(1) for _ in range(n)]
        self.faults: list[int] = []
        self.windows: list[tuple[int, int]] = []
        self.mkwrites: list[int] = []
        self.map_faulting = True

    def fault(self, vmf: VmFault) -> Page:
        self.faults.append(vmf.pgoff)
        return self.pages[vmf.pgoff]

    def map_pages(self, vmf: VmFault, start: int, end: int) -> int | None:
        self.windows.append((start, end))
        vma = vmf.vma
        hit = None
        for pgoff in range(start, end + 1):
            if pgoff == vmf.pgoff and not self.map_faulting:
                continue
            va = vma.start + ((pgoff - vma.vm_pgoff) << PAGE_SHIFT)
            if vma.mm.translate(va) is None:
                dmamap.vm_insert_page(vma, va, self.pages[pgoff])
                hit = VM_FAULT_NOPAGE if pgoff == vmf.pgoff else hit
        return hit

    def page_mkwrite(self, vmf: VmFault) -> None:
        assert vmf.write
        self.mkwrites.append(vmf.pgoff)


def expected_window(vma: Vma, va: int, window: int) -> tuple[int, int]:
    """do_fault_around's window in object pages, from its definition: the aligned
    block of ``window`` bytes around va, its start clamped to the VMA, its end to
    the start + window, the page table (2 MiB) and the VMA."""
    lo = max(va - va % window, vma.start)
    hi = min(lo + window, va - va % PMD + PMD, vma.end)
    first = vma.vm_pgoff + ((lo - vma.start) >> PAGE_SHIFT)
    return first, first + ((hi - lo) >> PAGE_SHIFT) - 1


# ---- map_pages: fault-around ----

def test_map_pages_is_called_before_fault_with_the_fault_around_window(m: dmamap.Machine) -> None:
    """do_read_fault: a read fault calls ->map_pages for the fault-around window
    (64 KiB by default, fault_around_bytes) and, when it mapped the faulting
    page, never ->fault."""
    obj = Pages(m, 64)
    mm = m.new_address_space()
    vma = mm.mmap(40 * P, offset=3 * P)
    vma.vm_ops = VmOperations("pages", fault=obj.fault, map_pages=obj.map_pages)
    va = vma.start + 21 * P + 5
    assert mm.read8(va) == 0
    assert (obj.windows, obj.faults) == ([expected_window(vma, va, 64 << 10)], []), dmamap.fault_around_bytes()
    start, end = obj.windows[0]
    assert mm.count_present(vma.start, len(vma)) == end - start + 1
    for pgoff in range(start, end + 1):
        t = mm.translate(vma.start + ((pgoff - 3) << PAGE_SHIFT))
        assert t is not None and t.pa == obj.pages[pgoff].phys_addr
    mm.read8(vma.start)   # the window's start is clamped to the VMA
    assert obj.windows[1] == expected_window(vma, vma.start, 64 << 10) == (3, 3 + 15)
    last = vma.end - P
    mm.read8(last)        # and its end to the VMA
    assert obj.windows[2] == expected_window(vma, last, 64 << 10)
    assert obj.windows[2][1] == 3 + 39


def test_map_pages_that_misses_the_faulting_page_falls_back_to_fault(m: dmamap.Machine) -> None:
    obj = Pages(m, 32)
    obj.map_faulting = False
    mm = m.new_address_space()
    vma = mm.mmap(32 * P)
    vma.vm_ops = VmOperations("pages", fault=obj.fault, map_pages=obj.map_pages)
    mm.read8(vma.start + 7 * P)
    assert len(obj.windows) == 1 and obj.faults == [7]
    assert mm.translate(vma.start + 7 * P).pa == obj.pages[7].phys_addr


def test_map_pages_only_on_read_faults_and_with_fault_around_on(m: dmamap.Machine) -> None:
    """A write fault (do_shared_fault) never faults around; fault_around_bytes of
    one page turns fault-around off; the window is a power of two of pages, at
    most one page table (fault_around_bytes_set)."""
    obj = Pages(m, 32)
    mm = m.new_address_space()
    vma = mm.mmap(32 * P)
    vma.vm_ops = VmOperations("pages", fault=obj.fault, map_pages=obj.map_pages)
    mm.write8(vma.start + 2 * P, 1)
    assert obj.windows == [] and obj.faults == [2]
    dmamap.set_fault_around_bytes(P)
    mm.read8(vma.start + 9 * P)
    assert obj.windows == [] and obj.faults == [2, 9]
    dmamap.set_fault_around_bytes(3 * P)   # rounded down to 2 pages
    assert dmamap.fault_around_bytes() == 2 * P
    mm.read8(vma.start + 13 * P)
    assert obj.windows == [(12, 13)] and obj.faults == [2, 9]
    with pytest.raises(InvalidArgumentError):
        dmamap.set_fault_around_bytes(PMD + P)
    assert dmamap.fault_around_bytes() == 2 * P


# ---- page_mkwrite: write-notify ----

def test_page_mkwrite_before_the_first_write_to_each_page(m: dmamap.Machine) -> None:
    """vma_wants_writenotify: with ->page_mkwrite a shared writable VMA's PTEs
    are installed read-only; the first write to a page (present: wp_page_shared;
    not present: do_shared_fault) calls it once, then the PTE is writable."""
    obj = Pages(m, 5)
    mm = m.new_address_space()
    vma = mm.mmap(5 * P, offset=0)
    vma.vm_ops = VmOperations("pages", fault=obj.fault, page_mkwrite=obj.page_mkwrite)
    assert not vma.vm_page_prot.writable
    mm.read8(vma.start + P)               # read fault: a read-only PTE, no page_mkwrite
    assert obj.mkwrites == [] and not mm.translate(vma.start + P).writable
    mm.write8(vma.start + P + 3, 0xA5)    # wp fault
    assert obj.mkwrites == [1] and mm.translate(vma.start + P).writable
    mm.write8(vma.start + P + 4, 0xA6)    # writable now: no second call
    mm.write32(vma.start + 2 * P, 0x01020304)   # not present: ->fault, then page_mkwrite
    assert obj.faults == [1, 2] and obj.mkwrites == [1, 2]
    assert mm.read(vma.start + P + 3, 2) == b"\xa5\xa6"
    assert mm.read32(vma.start + 2 * P) == 0x01020304
    mm.touch(vma.start + 3 * P, 2)              # the touch loop: read faults, read-only PTEs
    mm.touch(vma.start + 3 * P, 2, write=True)  # and its write path meets them
    assert obj.mkwrites == [1, 2, 3, 4] and mm.translate(vma.start + 4 * P).writable
    # mprotect keeps write-notify: write access comes back read-only in the PTEs
    mm.mprotect(vma, prot="r")
    mm.mprotect(mm.vmas[0], prot="rw")
    vma = mm.vmas[0]
    assert not mm.translate(vma.start + P).writable
    mm.write8(vma.start + P, 1)
    assert obj.mkwrites == [1, 2, 3, 4, 1]


def test_page_mkwrite_refusal_fails_the_write(m: dmamap.Machine) -> None:
    """do_page_mkwrite: VM_FAULT_SIGBUS (or an exception) fails the access and
    the PTE stays read-only, the byte unwritten."""
    obj = Pages(m, 2)
    refuse = {"sigbus": True}

    def mkwrite(vmf: VmFault) -> int | None:
        if refuse["sigbus"]:
            return VM_FAULT_SIGBUS
        raise RuntimeError("device is read-only now")

    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    vma.vm_ops = VmOperations("ro", fault=obj.fault, page_mkwrite=mkwrite)
    mm.read8(vma.start)
    with pytest.raises(BusError):
        mm.write8(vma.start, 7)
    refuse["sigbus"] = False
    with pytest.raises(dmamap.HandlerError, match="read-only now"):
        mm.write8(vma.start, 7)
    assert mm.read8(vma.start) == 0 and not mm.translate(vma.start).writable


def test_page_mkwrite_with_a_builtin_fault_handler_and_not_for_private(m: dmamap.Machine) -> None:
    """A C (built-in) handler keeps working under write-notify; a private
    mapping never calls page_mkwrite (its writes copy: do_cow_fault)."""
    calls: list[int] = []
    pages = m.alloc_pages(4)
    mm = m.new_address_space()
    vma = mm.mmap(4 * P)
    vma.set_builtin_fault("page", [(pages.pfn, 4)])
    vma.vm_ops = VmOperations("builtin", page_mkwrite=lambda vmf: calls.append(vmf.pgoff))
    mm.read8(vma.start + 3 * P)
    assert not mm.translate(vma.start + 3 * P).writable
    mm.write8(vma.start + 3 * P, 9)
    assert calls == [3] and mm.translate(vma.start + 3 * P).pa == pages.phys_addr + 3 * P
    private = mm.mmap(P, shared=False)
    obj = Pages(m, 1)
    private.vm_ops = VmOperations("private", fault=obj.fault, page_mkwrite=obj.page_mkwrite)
    mm.write8(private.start, 1)
    assert obj.mkwrites == [] and mm.stats.cow_faults >= 1


# ---- huge_fault ----

class Huge:
    """A PFN-mapped device window (2 MiB-aligned RAM here) with a huge_fault
    mapping 2 MiB blocks, or falling back, and a 4 KiB ->fault."""

    def __init__(self, m: dmamap.Machine, fallback: bool = False) -> None:
        self.base = m.alloc_pages(1024, align=512)
        self.fallback = fallback
        self.huge: list[tuple[int, int]] = []
        self.faults: list[int] = []

    def huge_fault(self, vmf: VmFault, order: int) -> int:
        self.huge.append((vmf.pgoff, order))
        if self.fallback:
            return VM_FAULT_FALLBACK
        haddr = vmf.address & ~(PMD - 1)
        pgoff = vmf.vma.vm_pgoff + ((haddr - vmf.vma.start) >> PAGE_SHIFT)
        return dmamap.vmf_insert_pfn_pmd(vmf, self.base.pfn + pgoff, vmf.write)

    def fault(self, vmf: VmFault) -> int:
        self.faults.append(vmf.pgoff)
        return dmamap.vmf_insert_pfn(vmf.vma, vmf.address & ~(P - 1), self.base.pfn + vmf.pgoff)


def pfnmap(mm: dmamap.AddressSpace, length: int, obj: Huge, *, offset: int = 0) -> Vma:
    vma = mm.mmap(length, offset=offset)
    vma.vm_flags_set(VmFlags.VM_IO | VmFlags.VM_PFNMAP)
    vma.vm_ops = VmOperations("huge", fault=obj.fault, huge_fault=obj.huge_fault)
    return vma


def test_huge_fault_maps_a_2mib_block(m: dmamap.Machine) -> None:
    """create_huge_pmd: a fault in a PMD-aligned, PMD-sized window of the VMA
    whose PMD is none calls ->huge_fault(vmf, PMD_ORDER); vmf_insert_pfn_pmd
    installs one block and ->fault is not called."""
    obj = Huge(m)
    mm = m.new_address_space()
    vma = pfnmap(mm, 2 * PMD, obj)
    assert vma.start % PMD == 0
    mm.write32(vma.start + PMD + 5 * P + 8, 0xFEEDBEEF)
    assert obj.huge == [(512 + 5, PMD_ORDER)] and obj.faults == []
    t = mm.translate(vma.start + PMD + 300 * P)
    assert t is not None and t.page_size == PMD and t.special
    assert t.pa == obj.base.phys_addr + PMD + 300 * P
    assert mm.read32(vma.start + PMD + 5 * P + 8) == 0xFEEDBEEF
    assert mm.count_present(vma.start + PMD, PMD) == 512 and mm.count_present(vma.start, PMD) == 0


def test_huge_fault_fallback_and_unsuitable_windows(m: dmamap.Machine) -> None:
    """VM_FAULT_FALLBACK goes on with ->fault (4 KiB); a VMA with no whole
    aligned 2 MiB window around the address, or whose vm_pgoff is not 2 MiB
    congruent with its address (thp_vma_suitable_order), never calls it; nor
    does a PMD that already holds a page table."""
    obj = Huge(m, fallback=True)
    mm = m.new_address_space()
    vma = pfnmap(mm, PMD, obj)
    mm.read8(vma.start + 7 * P)
    assert obj.huge == [(7, PMD_ORDER)] and obj.faults == [7]
    assert mm.translate(vma.start + 7 * P).page_size == P
    obj2 = Huge(m)
    small = pfnmap(mm, PMD // 2, obj2)
    mm.read8(small.start)
    skew = pfnmap(mm, PMD, obj2, offset=P)
    mm.read8(skew.start)
    assert obj2.huge == [] and obj2.faults == [0, 1]
    obj3 = Huge(m)
    vma3 = pfnmap(mm, PMD, obj3)
    obj3.fallback = True
    mm.read8(vma3.start)           # falls back: a page table now lives at that PMD
    obj3.fallback = False
    mm.read8(vma3.start + 9 * P)   # pmd_none is false: no huge_fault
    assert len(obj3.huge) == 1 and obj3.faults == [0, 9]


def test_vmf_insert_pfn_pmd_refusals(m: dmamap.Machine) -> None:
    """vmf_insert_pfn_pmd follows huge_memory.c's BUG_ONs as errors: a VMA that is
    neither VM_PFNMAP nor VM_MIXEDMAP, a pfn not 2 MiB-aligned, a block outside
    the VMA; nothing is mapped."""
    obj = Huge(m)
    mm = m.new_address_space()
    plain = mm.mmap(PMD)
    vmf = VmFault(plain, plain.start, 0, False)
    with pytest.raises(VmaKindError):
        dmamap.vmf_insert_pfn_pmd(vmf, obj.base.pfn)
    vma = pfnmap(mm, PMD, obj)
    with pytest.raises(InvalidArgumentError):
        dmamap.vmf_insert_pfn_pmd(VmFault(vma, vma.start, 0, False), obj.base.pfn + 1)
    half = pfnmap(mm, PMD // 2, obj)
    with pytest.raises(AddressRangeError):
        dmamap.vmf_insert_pfn_pmd(VmFault(half, half.start, 0, False), obj.base.pfn)
    assert mm.count_present(vma.start, PMD) == 0 and mm.count_present(plain.start, PMD) == 0


# ---- access: access_process_vm ----

def test_access_process_vm_normal_path_and_vm_io(m: dmamap.Machine) -> None:
    """__access_remote_vm: pages with descriptors are read and written through
    get_user_pages (faulting them in); a VM_IO / VM_PFNMAP VMA only through
    ->access: without one nothing is done (0 bytes), as ptrace gets -EIO."""
    obj = Pages(m, 3)
    mm = m.new_address_space()
    vma = mm.mmap(3 * P)
    vma.vm_ops = VmOperations("pages", fault=obj.fault)
    assert dmamap.access_process_vm(mm, vma.start + P - 2, b"ptrace", write=True) == 6
    assert mm.read(vma.start + P - 2, 6) == b"ptrace"
    assert dmamap.access_process_vm(mm, vma.start + P - 2, 6) == b"ptrace"
    assert dmamap.access_process_vm(mm, vma.end - 2, 8) == mm.read(vma.end - 2, 2)   # stops at the end
    dev = m.add_device("regs", bars=[2 * P])
    bar = dev.bar(0)[0]
    io = mm.mmap(2 * P)
    io.vm_page_prot = dmamap.pgprot_noncached(io.vm_page_prot)
    dmamap.remap_pfn_range(io, io.start, bar >> PAGE_SHIFT, 2 * P, io.vm_page_prot)
    mm.write32(io.start + 0x10, 0x11223344)
    assert dmamap.access_process_vm(mm, io.start + 0x10, 4) == b""
    io.vm_ops = VmOperations("regs", access=dmamap.generic_access_phys)
    assert dmamap.access_process_vm(mm, io.start + 0x10, 4) == (0x11223344).to_bytes(4, "little")
    assert dmamap.access_process_vm(mm, io.start + P - 4, b"\x01\x02\x03\x04\x05\x06\x07\x08", write=True) == 8
    assert mm.read(io.start + P - 4, 8) == bytes(range(1, 9))   # across the page boundary, page by page
    with pytest.raises(TypeError):
        dmamap.access_process_vm(mm, io.start, "x", write=True)   # type: ignore[arg-type]


def test_mmio_kind_reaches_registers_through_generic_access_phys(m: dmamap.Machine) -> None:
    """The MMIO kind's standard ops have ->access = generic_access_phys; a
    read-only PTE refuses a write (-EINVAL: nothing written)."""
    dev = m.add_device("regs", bars=[P])
    bar = dev.bar(0)[0]
    mm = m.new_address_space()
    vma = mm.mmap(P)
    dmamap.mmio_map(vma, bar, P)
    assert vma.vm_ops is dmamap.MMIO_VM_OPS and dmamap.MMIO_VM_OPS.access is dmamap.generic_access_phys
    mm.write32(vma.start + 8, 0xCAFE)
    assert dmamap.access_process_vm(mm, vma.start + 8, 4) == (0xCAFE).to_bytes(4, "little")
    ro = mm.mmap(P, prot="r")
    dmamap.mmio_map(ro, bar, P)
    assert dmamap.access_process_vm(mm, ro.start + 8, b"\0\0\0\0", write=True) == 0
    assert mm.read32(vma.start + 8) == 0xCAFE


# ---- VMA merge ----

def test_mprotect_back_merges_pieces_without_close(m: dmamap.Machine) -> None:
    """mm/vma.c: mprotect of the middle splits in three (->open twice);
    mprotect back to the neighbours' flags merges them into one VMA again, PTEs
    and vm_pgoff kept, no ->close for the merged pieces."""
    events: list[str] = []
    obj = Pages(m, 12)
    ops = VmOperations("mergeable", fault=obj.fault, open=lambda v: events.append("open"))
    mm = m.new_address_space()
    vma = mm.mmap(8 * P, offset=4 * P)
    vma.vm_ops = ops
    mm.write(vma.start, bytes(range(8)))
    start, end = vma.start, vma.end
    mid = mm.mprotect(vma, start + 2 * P, 3 * P, "r")
    assert len(mm.vmas) == 3 and mid.vm_pgoff == 6 and events == ["open", "open"]
    back = mm.mprotect(mid, prot="rw")
    assert [(v.start, v.end) for v in mm.vmas] == [(start, end)] and back is mm.vmas[0]
    assert back.vm_pgoff == 4 and back.vm_ops is ops and not mid.live
    assert mm.read(start, 8) == bytes(range(8)) and events == ["open", "open"]
    mm.write8(start + 6 * P, 1)
    assert obj.faults[-1] == 4 + 6


def test_vmas_with_close_never_merge(m: dmamap.Machine) -> None:
    events: list[str] = []
    ops = VmOperations("counted", open=lambda v: events.append("open"), close=lambda v: events.append("close"))
    mm = m.new_address_space()
    vma = mm.mmap(6 * P)
    vma.vm_ops = ops
    mid = mm.mprotect(vma, vma.start + 2 * P, 2 * P, "r")
    mm.mprotect(mid, prot="rw")
    assert len(mm.vmas) == 3 and events == ["open", "open"]
    mm.close()
    assert events.count("close") == 3


def test_mmap_next_to_a_compatible_vma_merges(m: dmamap.Machine) -> None:
    """An mmap right after a compatible VMA extends it (vma_merge_new_range);
    different flags, a non-contiguous vm_pgoff or a VM_SPECIAL neighbour keep
    them apart."""
    mm = m.new_address_space()
    a = mm.mmap(2 * P, addr=0x4000_0000)
    b = mm.mmap(P, addr=a.end, offset=2 * P)
    assert b is a and (a.start, a.end) == (0x4000_0000, 0x4000_0000 + 3 * P) and len(mm.vmas) == 1
    c = mm.mmap(P, addr=a.end, prot="r")
    d = mm.mmap(P, addr=c.end, offset=9 * P, prot="r")
    assert len(mm.vmas) == 3 and c is not a and d is not c
    io = mm.mmap(P, addr=0x5000_0000, flags=VmFlags.VM_IO | VmFlags.VM_PFNMAP)
    e = mm.mmap(P, addr=io.end, flags=VmFlags.VM_IO | VmFlags.VM_PFNMAP, offset=P)
    assert e is not io and len(mm.vmas) == 5


# ---- the vmalloc kind ----

def test_remap_vmalloc_range_installs_the_vmalloc_kind(m: dmamap.Machine) -> None:
    buf = dmamap.vmalloc_user(m, 3 * P)
    mm = m.new_address_space()
    vma = mm.mmap(3 * P)
    dmamap.remap_vmalloc_range(vma, buf, 0)
    assert vma.vm_ops is dmamap.VMALLOC_VM_OPS and vma.vm_ops.name == "vmalloc"
    mm.write(vma.start + P, b"vm")
    assert dmamap.access_process_vm(mm, vma.start + P, 2) == b"vm"   # pages: the normal path
    mm.munmap(vma)
    dmamap.vfree(buf)


def test_standard_kind_objects_are_exported() -> None:
    """One standard VmOperations per memory kind, exported at the top level."""
    from dmamap import dma, vmap

    kinds = {"COHERENT_VM_OPS": dma, "COHERENT_SG_VM_OPS": dma, "MMIO_VM_OPS": dma, "PIO_VM_OPS": dma,
             "VMALLOC_VM_OPS": vmap}
    for name, mod in kinds.items():
        assert name in dmamap.__all__ and getattr(dmamap, name) is getattr(mod, name)
        assert isinstance(getattr(dmamap, name), VmOperations)
    assert len({getattr(dmamap, n).name for n in kinds}) == len(kinds)


def test_access_callback_is_called_until_done_or_refused(m: dmamap.Machine) -> None:
    """__access_remote_vm calls ->access again from where the last call stopped,
    and stops at a call that does nothing (bytes <= 0)."""
    regs = bytearray(range(256)) * 16
    calls: list[tuple[int, int, bool]] = []

    def access(vma: Vma, addr: int, buf: memoryview, write: bool) -> int:
        off = addr - vma.start
        calls.append((off, len(buf), write))
        n = min(len(buf), 3, 16 - off if off < 16 else 0)
        if write:
            regs[off:off + n] = buf[:n]
        else:
            buf[:n] = regs[off:off + n]
        return n

    mm = m.new_address_space()
    vma = mm.mmap(P, flags=VmFlags.VM_IO | VmFlags.VM_PFNMAP)
    vma.vm_ops = VmOperations("regs", access=access)
    assert dmamap.access_process_vm(mm, vma.start + 2, 7) == bytes(range(2, 9))
    assert [c[:2] for c in calls] == [(2, 7), (5, 4), (8, 1)]
    calls.clear()
    assert dmamap.access_process_vm(mm, vma.start + 12, b"abcdefgh", write=True) == 4   # 16 - 12, then 0
    assert regs[12:16] == b"abcd" and calls[-1] == (16, 4, True)
