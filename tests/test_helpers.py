"""The coherent-buffer helpers on every platform: dma_alloc_coherent +
dma_mmap_coherent with every legal strategy, both DMA directions with no sync
call, platform-specific page-descriptor and memtype rules, DMA-API-debug
checks, unmapping and resource accounting."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, STRATEGIES
from dmamap.errors import (
    BadPageError,
    DmaDoubleFreeError,
    DmaFreeError,
    DmaLeakError,
    DmaUseAfterFreeError,
    InvalidArgumentError,
    MemtypeConflictError,
    NoFaultHandlerError,
    SegmentationFault,
    StrategyError,
    VirtToPageError,
)

P = PAGE_SIZE
RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram")
USER_CACHE = {"x86": "WB", "arm": "NORMAL_NC", "sram": "NORMAL_NC", "riscv": "NC"}
BUS_OFFSET = {"x86": 0, "arm": 0x4000_0000, "sram": 0, "riscv": 0}
LEGAL = [(p, s) for p in PLATFORMS for s in STRATEGIES if not (p == "sram" and s == "fault-page")]


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed * 31 + (i >> 8)) & 0xFF for i in range(n))


def buf_pa(dev: dmamap.Device, buf: dmamap.DmaBuffer) -> int:
    return dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle) << PAGE_SHIFT


def free(dev: dmamap.Device, buf: dmamap.DmaBuffer) -> None:
    dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)


# ---- both DMA directions, every platform, every legal strategy ----

@pytest.mark.parametrize("offset_pages", [0, 3])
@pytest.mark.parametrize(("plat", "strategy"), LEGAL)
def test_coherent_both_directions(m: dmamap.Machine, plat: str, strategy: str, offset_pages: int) -> None:
    """User writes reach the device and device writes reach the user, with no sync
    call, for every strategy and a zero or non-zero page-aligned offset; every page
    lands on the right physical page with the platform's user attribute."""
    dev = m.add_device("nic", bars=[P])
    buf = dmamap.dma_alloc_coherent(dev, 8 * P)
    npages = 8 - offset_pages
    mm = m.new_address_space()
    vma = mm.mmap(npages * P, offset=offset_pages * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
    base = buf.dma_handle + offset_pages * P
    n = npages * P

    data = pattern(n, 1)
    mm.write(vma.start, data)
    assert dev.dma_read(base, n) == data

    reply = pattern(n, 2)
    dev.dma_write(base, reply)
    assert mm.read(vma.start, n) == reply

    # Width accessors, little-endian, including one that crosses a page.
    mm.write8(vma.start + 1, 0xA5)
    mm.write16(vma.start + 0x102, 0xBEEF)
    mm.write32(vma.start + P + 8, 0xDEADBEEF)
    mm.write64(vma.start + 2 * P - 4, 0x0123456789ABCDEF)
    assert dev.dma_read(base + 1, 1) == b"\xa5"
    assert dev.dma_read(base + 0x102, 2) == (0xBEEF).to_bytes(2, "little")
    assert dev.dma_read(base + P + 8, 4) == (0xDEADBEEF).to_bytes(4, "little")
    assert dev.dma_read(base + 2 * P - 4, 8) == (0x0123456789ABCDEF).to_bytes(8, "little")
    dev.dma_write(base + 3 * P - 8, (0x1122334455667788).to_bytes(8, "little"))
    assert mm.read64(vma.start + 3 * P - 8) == 0x1122334455667788
    assert mm.read32(vma.start + 3 * P - 4) == 0x11223344
    assert mm.read16(vma.start + 3 * P - 8) == 0x7788
    assert mm.read8(vma.start + 3 * P - 1) == 0x11

    pa = buf_pa(dev, buf)
    assert pa - buf.dma_handle == BUS_OFFSET[plat]
    for i in range(npages):
        t = mm.translate(vma.start + i * P + 5)
        assert t is not None
        assert t.pa == pa + (offset_pages + i) * P + 5
        assert t.cache == USER_CACHE[plat]
        assert t.user and t.writable
    assert m.attribute_reports == []
    # Pages before the offset were never touched by the user.
    assert dev.dma_read(buf.dma_handle, offset_pages * P) == bytes(offset_pages * P)


@pytest.mark.parametrize(("plat", "strategy"), LEGAL)
def test_strategy_fills_page_tables_as_named(m: dmamap.Machine, plat: str, strategy: str) -> None:
    """'prefault*' fills every PTE at map time with no fault; 'fault*' fills none until
    touched; page-returning faults (RAM only) give non-special PTEs; PFN inserts and
    prefaults give special PTEs in a VM_PFNMAP VMA; fault-around maps the neighbours
    of a read fault."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 32 * P)
    mm = m.new_address_space()
    vma = mm.mmap(32 * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
    present = mm.count_present(vma.start, len(vma))
    if strategy.startswith("prefault"):
        assert present == 32 and mm.stats.faults == 0
    else:
        assert present == 0
    mm.read8(vma.start + 5 * P)
    t = mm.translate(vma.start + 5 * P)
    assert t is not None and t.pa == buf_pa(dev, buf) + 5 * P
    is_ram = plat != "sram"
    page_mode = is_ram and strategy in ("fault", "fault-page", "fault-around")
    assert t.special is not page_mode
    assert vma.pfnmap is not page_mode
    if strategy.startswith("fault"):
        assert mm.stats.faults == 1
        expected = 16 if strategy == "fault-around" else 1
        assert mm.count_present(vma.start, len(vma)) == expected
    if page_mode:
        page = dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, 5 * P)
        assert page.mapcount == 1
        mm.munmap(vma)
        assert page.mapcount == 0


@pytest.mark.parametrize("strategy", ["prefault-large", "fault-large"])
def test_large_strategies_use_2mib_pages(m: dmamap.Machine, plat: str, strategy: str) -> None:
    """Where the physical and virtual addresses are 2 MiB aligned the large strategies
    map one 2 MiB entry, and it still points at the right bytes."""
    dev = m.add_device("gpu")
    buf = dmamap.dma_alloc_coherent(dev, 1024 * P)
    pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    skip = (-pfn) % 512      # first 2 MiB-aligned page of the buffer
    mm = m.new_address_space()
    vma = mm.mmap(512 * P, offset=skip * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy=strategy)
    mm.write32(vma.start + 300 * P + 12, 0xCAFEF00D)
    t = mm.translate(vma.start + 300 * P)
    assert t is not None and t.page_size == 2 << 20
    assert t.pa == (pfn + skip + 300) << PAGE_SHIFT
    assert t.cache == USER_CACHE[plat]
    assert dev.dma_read(buf.dma_handle + (skip + 300) * P + 12, 4) == (0xCAFEF00D).to_bytes(4, "little")
    assert mm.count_present(vma.start, len(vma)) == 512


def test_default_strategy_is_the_platform_s(m: dmamap.Machine, plat: str) -> None:
    """Without a strategy x86 and arm prefault, sram maps lazily with PFN inserts."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 4 * P)
    mm = m.new_address_space()
    vma = mm.mmap(4 * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf)
    lazy = plat == "sram"
    assert mm.count_present(vma.start, len(vma)) == (0 if lazy else 4)
    mm.write(vma.start, b"x" * 4 * P)
    assert dev.dma_read(buf.dma_handle, 4 * P) == b"x" * 4 * P
    assert vma.pfnmap and mm.translate(vma.start).special
    assert mm.stats.faults == (4 if lazy else 0)


def test_unknown_strategy_is_refused(m: dmamap.Machine) -> None:
    """A strategy not in STRATEGIES raises StrategyError and maps nothing."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, P)
    mm = m.new_address_space()
    vma = mm.mmap(P)
    with pytest.raises(StrategyError):
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="eager")
    assert mm.count_present(vma.start, P) == 0


def test_buffer_size_not_page_multiple(m: dmamap.Machine) -> None:
    """A 5000-byte buffer occupies two pages and maps (and round-trips) as two."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 5000)
    assert buf.size == 5000
    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf)
    mm.write(vma.start, pattern(2 * P, 3))
    assert dev.dma_read(buf.dma_handle, 2 * P) == pattern(2 * P, 3)


def test_mmap_argument_errors(m: dmamap.Machine) -> None:
    """Unaligned offsets, offsets past the buffer and VMAs larger than what is left
    are refused (-EINVAL/-ENXIO) without mapping anything."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 4 * P)
    mm = m.new_address_space()
    with pytest.raises(InvalidArgumentError):
        mm.mmap(2 * P, offset=100)   # mmap(2) refuses an unaligned offset (EINVAL)
    vma = mm.mmap(2 * P)
    vma.vm_pgoff = 4
    with pytest.raises(InvalidArgumentError):
        dmamap.dma_mmap_coherent(dev, vma, *buf)
    vma.vm_pgoff = 3
    with pytest.raises(InvalidArgumentError):
        dmamap.dma_mmap_coherent(dev, vma, *buf)   # 2-page VMA, 1 page left
    with pytest.raises(InvalidArgumentError):
        dmamap.dma_alloc_coherent(dev, 0)
    assert mm.count_present(vma.start, len(vma)) == 0
    vma.vm_pgoff = 2
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
    assert mm.count_present(vma.start, len(vma)) == 2


def test_allocations_are_zeroed_even_when_reused(m: dmamap.Machine) -> None:
    """dma_alloc_coherent returns zeroed memory, also where a freed buffer that the
    device and the user dirtied used to be (SRAM pools reuse addresses first-fit)."""
    dev = m.add_device("nic")
    mm = m.new_address_space()
    for round_ in range(3):
        buf = dmamap.dma_alloc_coherent(dev, 3 * P)
        assert dev.dma_read(buf.dma_handle, 3 * P) == bytes(3 * P), f"round {round_}"
        vma = mm.mmap(3 * P)
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        assert mm.read(vma.start, 3 * P) == bytes(3 * P)
        dev.dma_write(buf.dma_handle, b"\xaa" * 3 * P)
        mm.write(vma.start + 100, b"\xbb" * 100)
        mm.munmap(vma)
        free(dev, buf)


# ---- platform truths ----

def test_x86_kernel_pointer_is_the_direct_map() -> None:
    """On x86 cpu_addr is a direct-map address: virt_to_page works and agrees with the
    allocator, and the bus address is the physical address."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("nic")
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        page = dmamap.virt_to_page(buf.cpu_addr)
        assert page == dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
        assert dmamap.virt_to_page(buf.cpu_addr + P) == dmamap.dma_coherent_to_page(
            dev, buf.cpu_addr, buf.dma_handle, P)
        assert page.phys_addr == buf.dma_handle == dmamap.virt_to_phys(buf.cpu_addr)
        assert page.flags["dma"]
        m.kernel.write(buf.cpu_addr, b"kernel")
        assert dev.dma_read(buf.dma_handle, 6) == b"kernel"


def test_x86_conflicting_user_attribute_is_refused() -> None:
    """A UC-/WC user mapping of a WB coherent buffer via remap_pfn_range raises
    MemtypeConflictError and leaves PTEs, VMA, memtypes and counters as they were;
    the WB mapping the helper makes then works."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("nic")
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        flags, prot = vma.vm_flags, vma.vm_page_prot
        before, as_before = m.stats, mm.stats
        for bad in (dmamap.pgprot_noncached(prot), dmamap.pgprot_writecombine(prot)):
            with pytest.raises(MemtypeConflictError):
                dmamap.remap_pfn_range(vma, vma.start, pfn, 2 * P, bad)
        assert mm.count_present(vma.start, 2 * P) == 0
        assert vma.vm_flags == flags and vma.vm_page_prot == prot
        assert m.memtype_lookup(pfn << PAGE_SHIFT) == "WB"
        assert m.stats == before and mm.stats == as_before
        dmamap.dma_mmap_coherent(dev, vma, *buf)
        assert mm.translate(vma.start).cache == "WB"
        mm.write(vma.start, b"ok")
        assert dev.dma_read(buf.dma_handle, 2) == b"ok"


def test_x86_plain_remap_of_coherent_buffer_is_coherent() -> None:
    """On x86 a default (WB) remap_pfn_range of the buffer is fine: DMA snoops."""
    with dmamap.Machine("x86", ram=RAM) as m:
        dev = m.add_device("nic")
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        mm = m.new_address_space()
        vma = mm.mmap(2 * P)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        dmamap.remap_pfn_range(vma, vma.start, pfn, 2 * P, vma.vm_page_prot)
        mm.write(vma.start, b"snoop")
        assert dev.dma_read(buf.dma_handle, 5) == b"snoop"
        dev.dma_write(buf.dma_handle, b"dev")
        assert mm.read(vma.start, 3) == b"dev"
        assert m.attribute_reports == []


def test_sram_never_hands_out_page_descriptors() -> None:
    """SRAM has no struct page: dma_coherent_to_page, pfn_to_page, a fault handler
    returning a Page or virt_to_page(cpu_addr), vm_insert_page and 'fault-page' all
    raise, and nothing gets mapped; PFN inserts work."""
    with dmamap.Machine("sram", ram=RAM) as m:
        dev = m.add_device("nic")
        buf = dmamap.dma_alloc_coherent(dev, 2 * P)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        assert m.region_of(pfn << PAGE_SHIFT) == "sram"
        assert not m.pfn_valid(pfn)
        for off in (0, P):
            with pytest.raises(BadPageError):
                dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, off)
        with pytest.raises(BadPageError):
            dmamap.pfn_to_page(pfn, machine=m)
        with pytest.raises(BadPageError):
            m.pfn_to_page(pfn + 1)
        with pytest.raises(VirtToPageError):
            dmamap.virt_to_page(buf.cpu_addr)

        mm = m.new_address_space()
        v_virt = mm.mmap(2 * P)
        v_virt.set_fault_handler(lambda vmf: dmamap.virt_to_page(buf.cpu_addr + (vmf.pgoff << PAGE_SHIFT)))
        with pytest.raises(VirtToPageError):
            mm.read8(v_virt.start)
        v_page = mm.mmap(2 * P)
        v_page.set_fault_handler(lambda vmf: dmamap.Page(m, pfn + vmf.pgoff))
        with pytest.raises(BadPageError):
            mm.write8(v_page.start + P, 1)
        v_ins = mm.mmap(P)
        with pytest.raises(BadPageError):
            dmamap.vm_insert_page(v_ins, v_ins.start, dmamap.Page(m, pfn))
        v_strat = mm.mmap(2 * P)
        prot = v_strat.vm_page_prot
        with pytest.raises(StrategyError):
            dmamap.dma_mmap_coherent(dev, v_strat, *buf, strategy="fault-page")
        assert v_strat.vm_page_prot == prot and not v_strat.pfnmap
        with pytest.raises(NoFaultHandlerError):
            mm.read8(v_strat.start)
        for v in (v_virt, v_page, v_ins, v_strat):
            assert mm.count_present(v.start, len(v)) == 0
        # The right way: a PFN-inserting handler in a VM_PFNMAP VMA.
        v_pfn = mm.mmap(2 * P)
        v_pfn.vm_flags_set(dmamap.VmFlags.VM_PFNMAP | dmamap.VmFlags.VM_IO)
        v_pfn.page_prot = dmamap.pgprot_dmacoherent(v_pfn.page_prot)
        v_pfn.set_fault_handler(lambda vmf: dmamap.vmf_insert_pfn(vmf.vma, vmf.address, pfn + vmf.pgoff))
        mm.write32(v_pfn.start + P, 0x5A5A5A5A)
        assert dev.dma_read(buf.dma_handle + P, 4) == b"\x5a" * 4
        # Nothing was handed out, so the buffer is still cleanly freeable.
        mm.close()
        free(dev, buf)


@pytest.mark.parametrize("plat", ["arm", "sram"])
def test_non_direct_mapped_kernel_pointer(m: dmamap.Machine, plat: str) -> None:
    """On arm and sram cpu_addr is a remapped (vmalloc-area) NORMAL_NC alias:
    virt_to_page/virt_to_phys raise, a fault handler built on it fails at the first
    touch, and the kernel alias itself is coherent with the device."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 2 * P)
    assert not m.virt_addr_valid(buf.cpu_addr)
    with pytest.raises(VirtToPageError):
        dmamap.virt_to_page(buf.cpu_addr)
    with pytest.raises(VirtToPageError):
        dmamap.virt_to_phys(buf.cpu_addr)
    t = m.kernel.translate(buf.cpu_addr)
    assert t is not None and t.cache == "NORMAL_NC" and not t.user
    assert t.pa == buf_pa(dev, buf)
    m.kernel.write(buf.cpu_addr + P, b"from the kernel")
    assert dev.dma_read(buf.dma_handle + P, 15) == b"from the kernel"
    dev.dma_write(buf.dma_handle, b"to the kernel")
    assert m.kernel.read(buf.cpu_addr, 13) == b"to the kernel"
    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    vma.set_fault_handler(lambda vmf: dmamap.virt_to_page(buf.cpu_addr + (vmf.pgoff << PAGE_SHIFT)))
    with pytest.raises(VirtToPageError):
        mm.read(vma.start, 4)
    assert mm.count_present(vma.start, 2 * P) == 0


# ---- DMA API debug ----

def _usable(m: dmamap.Machine, dev: dmamap.Device, buf: dmamap.DmaBuffer, tag: bytes) -> None:
    mm = m.new_address_space()
    vma = mm.mmap(buf.size)
    dmamap.dma_mmap_coherent(dev, vma, *buf)
    mm.write(vma.start + 8, tag)
    assert dev.dma_read(buf.dma_handle + 8, len(tag)) == tag
    mm.close()


def test_free_checks_leave_state_unchanged(m: dmamap.Machine) -> None:
    """Freeing what was not allocated (inside the buffer, by another device, a bogus
    address), with the wrong size or the wrong dma_handle raises DmaFreeError and
    changes nothing: counters equal, buffer still usable and freeable."""
    dev = m.add_device("nic")
    other = m.add_device("other")
    buf = dmamap.dma_alloc_coherent(dev, 3 * P)
    before = m.stats
    bad_calls = [
        (dev, buf.size, buf.cpu_addr + P, buf.dma_handle),
        (other, buf.size, buf.cpu_addr, buf.dma_handle),
        (dev, buf.size, 0x1234_5000, buf.dma_handle),
        (dev, 2 * P, buf.cpu_addr, buf.dma_handle),
        (dev, 3 * P + 1, buf.cpu_addr, buf.dma_handle),
        (dev, buf.size, buf.cpu_addr, buf.dma_handle + P),
    ]
    for args in bad_calls:
        with pytest.raises(DmaFreeError) as exc:
            dmamap.dma_free_coherent(*args)
        assert not isinstance(exc.value, DmaDoubleFreeError)
    assert m.stats == before
    _usable(m, dev, buf, b"still mine")
    free(dev, buf)
    assert m.stats.ram_pages_used <= before.ram_pages_used


def test_double_free_and_use_after_free(m: dmamap.Machine) -> None:
    """A second free is DmaDoubleFreeError; mapping or looking up a freed buffer is
    DmaUseAfterFreeError; neither changes any counter or maps anything."""
    dev = m.add_device("nic")
    keep = dmamap.dma_alloc_coherent(dev, P)
    buf = dmamap.dma_alloc_coherent(dev, 2 * P)
    free(dev, buf)
    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    before, as_before = m.stats, mm.stats
    with pytest.raises(DmaDoubleFreeError):
        free(dev, buf)
    with pytest.raises(DmaUseAfterFreeError):
        dmamap.dma_mmap_coherent(dev, vma, *buf)
    with pytest.raises(DmaUseAfterFreeError):
        dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
    with pytest.raises(DmaUseAfterFreeError):
        dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
    assert m.stats == before and mm.stats == as_before
    assert mm.count_present(vma.start, len(vma)) == 0
    _usable(m, dev, keep, b"other buffer fine")


def test_free_while_user_mapped(m: dmamap.Machine) -> None:
    """Freeing a buffer still mapped in any process raises DmaFreeError (the mapping
    keeps working); it succeeds once every mapping is gone, by munmap or by closing
    the address space."""
    dev = m.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 2 * P)
    mm1, mm2 = m.new_address_space(), m.new_address_space()
    v1, v2 = mm1.mmap(2 * P), mm2.mmap(P, offset=P)
    dmamap.dma_mmap_coherent(dev, v1, *buf)
    dmamap.dma_mmap_coherent(dev, v2, *buf)
    before = m.stats
    with pytest.raises(DmaFreeError):
        free(dev, buf)
    assert m.stats == before
    mm1.write(v1.start + P, b"shared")
    assert mm2.read(v2.start, 6) == b"shared"
    dmamap.dma_munmap_coherent(v1)
    with pytest.raises(DmaFreeError):
        free(dev, buf)
    mm2.close()
    free(dev, buf)


def test_device_removal_with_buffers(m: dmamap.Machine) -> None:
    """Removing a device with buffers allocated or mapped raises DmaLeakError and
    leaves the device attached and working; after cleanup removal succeeds, and
    force=True detaches regardless."""
    dev = m.add_device("nic", bars=[P])
    buf = dmamap.dma_alloc_coherent(dev, 2 * P)
    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault")
    before = m.stats
    with pytest.raises(DmaLeakError):
        dev.remove()
    assert m.stats == before and mm.count_present(vma.start, 2 * P) == 2
    mm.munmap(vma)
    before = m.stats
    with pytest.raises(DmaLeakError):
        m.remove_device("nic")
    assert not dev.removed and m.devices["nic"] is dev
    assert m.stats == before
    _usable(m, dev, buf, b"alive")
    free(dev, buf)
    dev.remove()
    assert dev.removed and "nic" not in m.devices

    dev2 = m.add_device("nic2")
    dmamap.dma_alloc_coherent(dev2, P)
    dev2.remove(force=True)
    assert dev2.removed and "nic2" not in m.devices


# ---- unmapping and resources ----

@pytest.mark.parametrize("how", ["dma_munmap_coherent", "munmap"])
@pytest.mark.parametrize("strategy", ["prefault", "fault-pfn", "fault-around"])
def test_unmap_clears_ptes_and_tlb(m: dmamap.Machine, strategy: str, how: str) -> None:
    """Both unmap calls clear every PTE and flush the TLB: a later access (even one the
    TLB had cached) is a SegmentationFault, and a new mapping at the same address
    sees its own buffer, never the old one."""
    dev = m.add_device("nic")
    old = dmamap.dma_alloc_coherent(dev, 4 * P)
    new = dmamap.dma_alloc_coherent(dev, 4 * P)
    dev.dma_write(old.dma_handle, b"OLD!" * P)
    dev.dma_write(new.dma_handle, b"NEW!" * P)
    mm = m.new_address_space()
    vma = mm.mmap(4 * P)
    dmamap.dma_mmap_coherent(dev, vma, *old, strategy=strategy)
    mm.touch(vma.start, 4)
    assert mm.read(vma.start + 3 * P, 4) == b"OLD!"   # in the TLB now
    flushes = mm.stats.tlb_flushes
    if how == "munmap":
        mm.munmap(vma)
    else:
        dmamap.dma_munmap_coherent(vma)
    assert not vma.live
    assert mm.stats.tlb_flushes > flushes
    assert mm.count_present(vma.start, 4 * P) == 0
    for i in range(4):
        with pytest.raises(SegmentationFault):
            mm.read8(vma.start + i * P)
    again = mm.mmap(4 * P, addr=vma.start)
    dmamap.dma_mmap_coherent(dev, again, *new, strategy=strategy)
    assert mm.read(again.start + 3 * P, 4) == b"NEW!"
    mm.munmap(again)
    free(dev, old)
    free(dev, new)


def test_resources_return_to_baseline(m: dmamap.Machine) -> None:
    """Allocating, mapping (prefaulted and faulted), touching, unmapping and freeing
    returns RAM pages, page-table pages and the address space's tables to baseline,
    repeatably."""
    dev = m.add_device("nic")
    mm = m.new_address_space()
    base, as_base = m.stats, mm.stats
    for _ in range(3):
        bufs = [dmamap.dma_alloc_coherent(dev, n * P) for n in (1, 7, 64)]
        vmas = []
        for i, b in enumerate(bufs):
            v = mm.mmap(b.size)
            dmamap.dma_mmap_coherent(dev, v, *b, strategy="prefault" if i % 2 else "fault")
            mm.touch(v.start, v.nr_pages, write=True)
            vmas.append(v)
        assert m.stats.table_pages > base.table_pages
        for v in vmas:
            mm.munmap(v)
        for b in bufs:
            free(dev, b)
        s = m.stats
        assert s.ram_pages_used == base.ram_pages_used
        assert s.table_pages == base.table_pages
        assert mm.stats.table_pages == as_base.table_pages


@pytest.mark.parametrize("platform", ["x86", "arm"])
def test_coherent_ram_is_naturally_aligned_so_large_pages_apply(platform: str) -> None:
    """Coherent RAM is aligned to its power-of-two size (as the buddy allocator
    gives it), so a 2 MiB buffer maps with one 2 MiB entry under prefault-large."""
    with dmamap.Machine(platform, ram=64 << 20) as m:
        dev = m.add_device("dev", bars=[0x1000])
        dmamap.dma_alloc_coherent(dev, 3 * dmamap.PAGE_SIZE)   # knock the allocator off alignment
        buf = dmamap.dma_alloc_coherent(dev, 2 << 20)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        assert (pfn << dmamap.PAGE_SHIFT) % (2 << 20) == 0
        odd = dmamap.dma_alloc_coherent(dev, 5 * dmamap.PAGE_SIZE)
        assert dmamap.dma_coherent_to_pfn(dev, odd.cpu_addr, odd.dma_handle) % 8 == 0
        mm = m.new_address_space()
        vma = mm.mmap(buf.size)
        dmamap.dma_mmap_coherent(dev, vma, *buf, strategy="prefault-large")
        t = mm.translate(vma.start)
        assert t is not None and t.page_size == 2 << 20
        assert mm.stats.ptes_written == 1
