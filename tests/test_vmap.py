"""vm_insert_pages / vm_map_pages (one C call), vm_iomap_memory /
io_remap_pfn_range, vmalloc_user / remap_vmalloc_range (mm/memory.c, mm/vmalloc.c)."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SIZE


def _pages(m: dmamap.Machine, n: int) -> list[dmamap.Page]:
    return [m.alloc_pages(1) for _ in range(n)]


def test_vm_insert_pages_maps_each_page_with_a_reference(m: dmamap.Machine) -> None:
    mm = m.new_address_space()
    pages = _pages(m, 5)
    for i, p in enumerate(pages):
        m.phys_write(p.phys_addr, bytes([i + 1]) * 8)
    vma = mm.mmap(8 * PAGE_SIZE)
    dmamap.vm_insert_pages(vma, vma.start + PAGE_SIZE, pages)
    assert vma.mixedmap and not vma.pfnmap
    for i, p in enumerate(pages):
        t = mm.translate(vma.start + (i + 1) * PAGE_SIZE)
        assert t is not None and t.pa == p.phys_addr and not t.special
        assert mm.read8(vma.start + (i + 1) * PAGE_SIZE) == i + 1
        assert (p.refcount, p.mapcount) == (2, 1)
    assert mm.stats.ptes_written == 5
    mm.munmap(vma)
    assert all((p.refcount, p.mapcount) == (1, 0) for p in pages)


def test_vm_insert_pages_is_all_or_nothing(m: dmamap.Machine) -> None:
    mm = m.new_address_space()
    pages = _pages(m, 4)
    vma = mm.mmap(4 * PAGE_SIZE)
    dmamap.vm_insert_page(vma, vma.start + 3 * PAGE_SIZE, pages[3])
    with pytest.raises(dmamap.PteBusyError):
        dmamap.vm_insert_pages(vma, vma.start, pages)       # the last PTE is taken
    free = m.alloc_pages(1)
    m.free_pages(free)
    with pytest.raises(dmamap.BadPageError):
        dmamap.vm_insert_pages(vma, vma.start, [pages[0], free])   # a free page
    with pytest.raises(dmamap.AddressRangeError):
        dmamap.vm_insert_pages(vma, vma.start + PAGE_SIZE, pages)  # runs past the VMA
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.vm_insert_pages(vma, vma.start, [])
    with pytest.raises(TypeError):
        dmamap.vm_insert_pages(vma, vma.start, [pages[0].pfn])  # type: ignore[list-item]
    assert mm.count_present(vma.start, 3 * PAGE_SIZE) == 0
    assert all((p.refcount, p.mapcount) == (1, 0) for p in pages[:3])
    pfnvma = mm.mmap(PAGE_SIZE)
    pfnvma.vm_flags_set(dmamap.VmFlags.VM_PFNMAP)
    with pytest.raises(dmamap.VmaKindError):
        dmamap.vm_insert_pages(pfnvma, pfnvma.start, pages[:1])


def test_vm_map_pages_follows_vm_pgoff_and_refuses_a_larger_vma(m: dmamap.Machine) -> None:
    mm = m.new_address_space()
    pages = _pages(m, 4)
    vma = mm.mmap(4 * PAGE_SIZE)
    dmamap.vm_map_pages(vma, pages, 4)
    assert [mm.translate(vma.start + i * PAGE_SIZE).pa for i in range(4)] == [p.phys_addr for p in pages]
    small = mm.mmap(2 * PAGE_SIZE)
    dmamap.vm_map_pages_zero(small, pages, 2)
    big = mm.mmap(5 * PAGE_SIZE)
    with pytest.raises(dmamap.InvalidArgumentError, match="ENXIO"):
        dmamap.vm_map_pages(big, pages, 4)
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.vm_map_pages(big, pages, 9)   # num larger than the list
    assert mm.count_present(big.start, len(big)) == 0
    if hasattr(vma, "vm_pgoff"):   # with mmap offsets: pages[vm_pgoff:]
        off = mm.mmap(2 * PAGE_SIZE, offset=2 * PAGE_SIZE)   # type: ignore[call-arg]
        dmamap.vm_map_pages(off, pages, 4)
        assert mm.translate(off.start).pa == pages[2].phys_addr


def test_vm_iomap_memory_maps_a_device_range(m: dmamap.Machine) -> None:
    mm = m.new_address_space()
    base = m.add_device("d", bars=[4 * PAGE_SIZE]).bar(0)[0]
    vma = mm.mmap(4 * PAGE_SIZE)
    vma.vm_page_prot = dmamap.pgprot_noncached(vma.vm_page_prot)
    dmamap.vm_iomap_memory(vma, base, 4 * PAGE_SIZE)
    assert vma.pfnmap and vma.io
    assert mm.translate(vma.start + 3 * PAGE_SIZE).pa == base + 3 * PAGE_SIZE
    mm.write32(vma.start + 0x10, 0x1234)
    assert mm.read32(vma.start + 0x10) == 0x1234
    odd = mm.mmap(PAGE_SIZE)
    odd.vm_page_prot = dmamap.pgprot_noncached(odd.vm_page_prot)
    dmamap.vm_iomap_memory(odd, base + 0x10, 0x20)   # not page-aligned: the kernel allows it
    assert mm.translate(odd.start).pa == base
    too_big = mm.mmap(5 * PAGE_SIZE)
    with pytest.raises(dmamap.InvalidArgumentError, match="EINVAL"):
        dmamap.vm_iomap_memory(too_big, base, 4 * PAGE_SIZE)
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.vm_iomap_memory(too_big, (1 << 64) - PAGE_SIZE, 2 * PAGE_SIZE)
    assert mm.count_present(too_big.start, len(too_big)) == 0 and not too_big.pfnmap


def test_io_remap_pfn_range_is_remap_pfn_range(m: dmamap.Machine) -> None:
    mm = m.new_address_space()
    base = m.add_device("d", bars=[PAGE_SIZE]).bar(0)[0]
    vma = mm.mmap(PAGE_SIZE)
    dmamap.io_remap_pfn_range(vma, vma.start, base >> 12, PAGE_SIZE, dmamap.pgprot_noncached(vma.vm_page_prot))
    t = mm.translate(vma.start)
    assert t.pa == base and t.special and t.cache == mm.translate(vma.start).cache


def test_vmalloc_user_is_zeroed_ram_with_page_descriptors(m: dmamap.Machine) -> None:
    k = dmamap.vmalloc_user(m, 3 * PAGE_SIZE + 1)   # rounded up to 4 pages
    assert m.kernel.read(k, 4 * PAGE_SIZE) == bytes(4 * PAGE_SIZE)
    pages = [dmamap.vmalloc_to_page(dmamap.KernelAddress(k + i * PAGE_SIZE, m)) for i in range(4)]
    assert all(m.pfn_valid(p.pfn) for p in pages)
    with pytest.raises(dmamap.VirtToPageError):
        dmamap.virt_to_page(k)   # not the direct map
    m.kernel.write(k + 2 * PAGE_SIZE, b"ring")
    mm = m.new_address_space()
    vma = mm.mmap(3 * PAGE_SIZE)
    dmamap.remap_vmalloc_range(vma, k, 1)   # pgoff 1: pages 1..3
    assert mm.read(vma.start + PAGE_SIZE, 4) == b"ring"
    assert vma.vm_flags & dmamap.VmFlags.VM_DONTEXPAND and vma.mixedmap
    assert mm.translate(vma.start).pa == pages[1].phys_addr
    assert mm.translate(vma.start).cache == m.kernel.translate(k).cache   # both cacheable, no alias bug
    mm.write(vma.start, b"user")
    assert m.kernel.read(k + PAGE_SIZE, 4) == b"user"
    used = m.stats.ram_pages_used
    dmamap.vfree(k)      # still mapped: the pages live on until the munmap
    assert mm.read(vma.start, 4) == b"user"
    mm.munmap(vma)
    assert all(p.refcount == 0 for p in pages) and m.stats.ram_pages_used < used - 4


def test_remap_vmalloc_range_misuse(m: dmamap.Machine) -> None:
    k = dmamap.vmalloc_user(m, 2 * PAGE_SIZE)
    mm = m.new_address_space()
    vma = mm.mmap(2 * PAGE_SIZE)
    with pytest.raises(dmamap.VmallocError):
        dmamap.remap_vmalloc_range(vma, k, 1)                 # one page past the end
    with pytest.raises(dmamap.VmallocError):
        dmamap.remap_vmalloc_range(vma, m.page_address(m.alloc_pages(1)), 0)   # not vmalloc'd
    with pytest.raises(dmamap.VmallocError):
        dmamap.remap_vmalloc_range(vma, int(k), 0)  # type: ignore[arg-type]
    with pytest.raises(dmamap.VmallocError):
        dmamap.vfree(dmamap.KernelAddress(k + PAGE_SIZE, m))
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.vmalloc_user(m, 0)
    with pytest.raises(dmamap.OutOfMemoryError):
        dmamap.vmalloc_user(m, m.ram_size * 2)
    assert mm.count_present(vma.start, len(vma)) == 0
    dmamap.vfree(k)
    with pytest.raises(dmamap.VmallocError):
        dmamap.vfree(k)


def test_c_vm_insert_pages_survives_null_and_hostile_arguments() -> None:
    from dmamap._binding import ffi, lib

    with dmamap.Machine("x86", ram=16 << 20) as m:
        mm = m.new_address_space()
        vma = mm.mmap(4 * PAGE_SIZE)
        page = m.alloc_pages(1)
        pfns = ffi.new("uint64_t[]", [page.pfn] * 4)
        err = ffi.new("struct dmamap_err *")
        N = ffi.NULL
        for e in (err, N):
            assert lib.dmamap_vm_insert_pages(N, vma.id, vma.start, pfns, 1, e) < 0
            assert lib.dmamap_vm_insert_pages(mm._ptr(), vma.id, vma.start, N, 1, e) < 0
            assert lib.dmamap_vm_insert_pages(mm._ptr(), vma.id, vma.start, pfns, 0, e) < 0
            assert lib.dmamap_vm_insert_pages(mm._ptr(), vma.id, vma.start, pfns, (1 << 64) - 1, e) < 0
            assert lib.dmamap_vm_insert_pages(mm._ptr(), vma.id, (1 << 64) - PAGE_SIZE, pfns, 2, e) < 0
            assert lib.dmamap_vm_insert_pages(mm._ptr(), -1, vma.start, pfns, 1, e) < 0
            assert lib.dmamap_vm_insert_pages(mm._ptr(), vma.id, vma.start, pfns, 5, e) < 0   # past the VMA
        assert mm.count_present(vma.start, len(vma)) == 0 and (page.refcount, page.mapcount) == (1, 0)
        # the same page four times is legal (four PTEs, four references)
        assert lib.dmamap_vm_insert_pages(mm._ptr(), vma.id, vma.start, pfns, 4, err) == 0
        assert (page.refcount, page.mapcount) == (5, 4)


def test_vm_insert_pages_from_many_threads() -> None:
    import threading

    with dmamap.Machine("arm", ram=32 << 20) as m:
        mm = m.new_address_space()
        vma = mm.mmap(256 * PAGE_SIZE)
        pages = _pages(m, 256)
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                for j in range(k * 32, (k + 1) * 32, 4):
                    dmamap.vm_insert_pages(vma, vma.start + j * PAGE_SIZE, pages[j:j + 4])
            except BaseException as exc:   # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert mm.count_present(vma.start, len(vma)) == 256
        assert all(mm.translate(vma.start + i * PAGE_SIZE).pa == p.phys_addr for i, p in enumerate(pages))


@pytest.mark.parametrize("plat", ["x86", "arm", "riscv"])
@pytest.mark.parametrize("strict", [False, True])
def test_vm_insert_pages_checks_attributes_as_vm_insert_page_does(plat: str, strict: bool) -> None:
    """The 2004 case: the right pages (dma_coherent_to_page) into a VMA with the
    default cacheable protection.  Whatever one vm_insert_page per page does --
    report, refuse or map -- one vm_insert_pages call does the same."""
    with dmamap.Machine(plat, ram=16 << 20, strict_memtype=strict) as m:
        dev = m.add_device("d")
        buf = dmamap.dma_alloc_coherent(dev, 2 * PAGE_SIZE)
        pages = [dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, i * PAGE_SIZE) for i in range(2)]
        mm = m.new_address_space()

        def attempt(fn: object) -> tuple[str, int, list[str | None]]:
            vma = mm.mmap(2 * PAGE_SIZE)
            before = len(m.attribute_reports)
            try:
                fn(vma)   # type: ignore[operator]
                outcome = "mapped"
            except dmamap.DmamapError as exc:
                outcome = type(exc).__name__
            caches = [(t.cache if (t := mm.translate(vma.start + i * PAGE_SIZE)) else None) for i in range(2)]
            return outcome, len(m.attribute_reports) - before, caches

        single = attempt(lambda v: [dmamap.vm_insert_page(v, v.start + i * PAGE_SIZE, p) for i, p in enumerate(pages)])
        multi = attempt(lambda v: dmamap.vm_insert_pages(v, v.start, pages))
        if single[0] != "mapped":   # refused: the single inserts stop at the first page, the list inserts none
            assert multi[0] == single[0] and multi[2] == [None, None]
        else:
            assert multi == single
