"""The non-coherent platforms' write-back CPU cache and attribute tracking: a
cacheable user alias of a coherent buffer really goes stale on arm (and is
reported), cache maintenance behaves as documented, and the arm kernel pointer
and bus addresses are what the platform says."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.errors import PhysicalAddressError, VirtToPageError

P = PAGE_SIZE
RAM = 16 << 20
LINE = 64


class Setup:
    """A coherent buffer with a *cacheable* user alias made by a naive driver
    (remap_pfn_range with the VMA's default attribute)."""

    def __init__(self, m: dmamap.Machine, npages: int = 2) -> None:
        self.m = m
        self.dev = m.add_device("nic")
        self.buf = dmamap.dma_alloc_coherent(self.dev, npages * P)
        self.pa = dmamap.dma_coherent_to_pfn(self.dev, self.buf.cpu_addr, self.buf.dma_handle) << PAGE_SHIFT
        self.mm = m.new_address_space()
        self.vma = self.mm.mmap(npages * P)
        dmamap.remap_pfn_range(self.vma, self.vma.start, self.pa >> PAGE_SHIFT, npages * P, self.vma.vm_page_prot)

    def dev_sees(self, off: int, n: int) -> bytes:
        return self.dev.dma_read(self.buf.dma_handle + off, n)


@pytest.fixture(params=["arm", "sram"])
def noncoherent(request: pytest.FixtureRequest) -> Iterator[dmamap.Machine]:
    """A machine whose DMA does not snoop the CPU cache."""
    with dmamap.Machine(str(request.param), ram=RAM) as m:
        yield m


@pytest.fixture
def arm() -> Iterator[dmamap.Machine]:
    """A small arm machine."""
    with dmamap.Machine("arm", ram=RAM) as m:
        yield m


def test_cacheable_alias_goes_stale_and_is_reported(noncoherent: dmamap.Machine) -> None:
    """remap_pfn_range with the default (cacheable NORMAL) attribute of a NORMAL_NC
    coherent buffer: the device reads stale memory after a user write, the user
    reads stale cache lines after a device write, and attribute tracking reports
    the NORMAL alias of NORMAL_NC for exactly the buffer's range."""
    s = Setup(noncoherent)
    t = s.mm.translate(s.vma.start)
    assert t.cache == "NORMAL" and t.cacheable
    reports = noncoherent.attribute_reports
    assert len(reports) == 1 and noncoherent.stats.memtype_reports == 1
    r = reports[0]
    assert (r["existing"], r["requested"]) == ("NORMAL_NC", "NORMAL")
    assert (r["start"], r["end"]) == (s.pa, s.pa + 2 * P)

    s.mm.write(s.vma.start, b"U" * 256)
    assert s.dev_sees(0, 256) == bytes(256)          # stale: still in the CPU cache
    s.dev.dma_write(s.buf.dma_handle, b"D" * 256)
    assert s.mm.read(s.vma.start, 256) == b"U" * 256  # stale: the CPU reads its own lines
    assert noncoherent.phys_read(s.pa, 256) == b"D" * 256


def test_helper_mapping_of_same_buffer_is_coherent(noncoherent: dmamap.Machine) -> None:
    """The same buffer through dma_mmap_coherent is NORMAL_NC, never cached, and
    raises no report."""
    dev = noncoherent.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 2 * P)
    mm = noncoherent.new_address_space()
    vma = mm.mmap(2 * P)
    dmamap.dma_mmap_coherent(dev, vma, *buf)
    hits = noncoherent.stats.cache_hits + noncoherent.stats.cache_misses
    mm.write(vma.start, b"U" * 256)
    assert dev.dma_read(buf.dma_handle, 256) == b"U" * 256
    dev.dma_write(buf.dma_handle, b"D" * 256)
    assert mm.read(vma.start, 256) == b"D" * 256
    assert noncoherent.stats.cache_hits + noncoherent.stats.cache_misses == hits
    assert noncoherent.attribute_reports == []


def test_clean_writes_back_and_keeps_lines(arm: dmamap.Machine) -> None:
    """clean_dcache_range makes dirty user data visible to the device and keeps the
    (now clean) lines: a later device write is still hidden from the CPU. Only the
    cleaned range is written back."""
    s = Setup(arm)
    s.mm.write(s.vma.start, b"A" * 2 * LINE)
    wb = arm.stats.cache_writebacks
    arm.clean_dcache_range(s.pa, LINE)
    assert arm.stats.cache_writebacks == wb + 1
    assert s.dev_sees(0, 2 * LINE) == b"A" * LINE + bytes(LINE)
    arm.clean_dcache_range(s.pa, LINE)                       # already clean: nothing to do
    assert arm.stats.cache_writebacks == wb + 1
    s.dev.dma_write(s.buf.dma_handle, b"B" * LINE)
    assert s.mm.read(s.vma.start, LINE) == b"A" * LINE       # line kept
    arm.clean_dcache_range(s.pa + LINE, 1)                   # any byte covers its whole line
    assert s.dev_sees(LINE, LINE) == b"A" * LINE


def test_flush_writes_back_and_drops_lines(arm: dmamap.Machine) -> None:
    """flush_dcache_range writes dirty lines back and drops them: the device sees the
    user's data and the CPU then sees the device's."""
    s = Setup(arm)
    s.mm.write(s.vma.start + 100, b"hello device")
    arm.flush_dcache_range(s.pa, 2 * P)
    assert s.dev_sees(100, 12) == b"hello device"
    s.dev.dma_write(s.buf.dma_handle + 100, b"hello CPU!!!")
    assert s.mm.read(s.vma.start + 100, 12) == b"hello CPU!!!"


def test_invalidate_drops_dirty_data(arm: dmamap.Machine) -> None:
    """invalidate_dcache_range discards dirty lines without writing them back: the
    user's write is lost to both sides, and the CPU now reads what the device
    wrote."""
    s = Setup(arm)
    s.dev.dma_write(s.buf.dma_handle, b"device data")
    s.mm.write(s.vma.start, b"user writes")
    wb = arm.stats.cache_writebacks
    arm.invalidate_dcache_range(s.pa, LINE)
    assert arm.stats.cache_writebacks == wb
    assert s.dev_sees(0, 11) == b"device data"
    assert s.mm.read(s.vma.start, 11) == b"device data"


def test_maintenance_outside_range_leaves_lines(arm: dmamap.Machine) -> None:
    """Maintenance of one range does not touch lines of another."""
    s = Setup(arm)
    s.mm.write(s.vma.start, b"first")
    s.mm.write(s.vma.start + P, b"second")
    arm.flush_dcache_range(s.pa + P, P)
    arm.invalidate_dcache_range(s.pa + 2 * P, P)
    assert s.dev_sees(P, 6) == b"second"
    assert s.dev_sees(0, 5) == bytes(5)
    arm.clean_dcache_range(s.pa, P)
    assert s.dev_sees(0, 5) == b"first"


def test_eviction_writes_back_least_recent_lines() -> None:
    """Writing twice the cache size through the cacheable alias evicts (and writes
    back) exactly the first half: the device sees it; the second half is still only
    in the cache until flushed."""
    with dmamap.Machine("arm", ram=RAM, cache_size=16 * 1024, cache_ways=4) as m:
        s = Setup(m, npages=8)
        data = bytes((i * 13 + 1) & 0xFF for i in range(32 * 1024))
        s.mm.write(s.vma.start, data)
        assert s.dev_sees(0, 16 * 1024) == data[:16 * 1024]
        assert s.dev_sees(16 * 1024, 16 * 1024) == bytes(16 * 1024)
        m.flush_dcache_range(s.pa, 8 * P)
        assert s.dev_sees(0, 32 * 1024) == data


def test_x86_has_no_cache_to_go_stale() -> None:
    """On x86 DMA snoops: a cacheable alias is coherent and maintenance is harmless."""
    with dmamap.Machine("x86", ram=RAM) as m:
        s = Setup(m)
        assert s.mm.translate(s.vma.start).cache == "WB"
        s.mm.write(s.vma.start, b"snooped")
        assert s.dev_sees(0, 7) == b"snooped"
        m.invalidate_dcache_range(s.pa, P)
        assert s.dev_sees(0, 7) == b"snooped"
        m.flush_dcache_range(s.pa, P)
        m.clean_dcache_range(s.pa, P)
        assert m.attribute_reports == [] and m.stats.cache_hits == m.stats.cache_misses == 0


def test_arm_kernel_pointer_and_bus_address(arm: dmamap.Machine) -> None:
    """The arm cpu_addr is a NORMAL_NC remap outside the direct map (virt_to_page
    raises) while dma_coherent_to_page finds the page through the allocator; the
    dma_handle is the physical address minus the 0x4000_0000 bus offset, and the
    device reaches the right bytes through it."""
    dev = arm.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, 3 * P)
    with pytest.raises(VirtToPageError):
        dmamap.virt_to_page(buf.cpu_addr)
    with pytest.raises(VirtToPageError):
        arm.virt_to_page(buf.cpu_addr + P)
    page = dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle)
    pa = page.phys_addr
    assert arm.pfn_valid(page.pfn) and page.flags["dma"]
    assert dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle, 2 * P).pfn == page.pfn + 2
    assert buf.dma_handle != pa and pa - buf.dma_handle == 0x4000_0000
    assert arm.kernel.translate(buf.cpu_addr + 2 * P).pa == pa + 2 * P
    # the direct-map address of the page is a different (cacheable) alias
    direct = dmamap.page_address(page)
    assert int(direct) != int(buf.cpu_addr) and dmamap.virt_to_page(direct) == page
    dev.dma_write(buf.dma_handle + P + 5, b"bus")
    assert arm.phys_read(pa + P + 5, 3) == b"bus"
    assert arm.kernel.read(buf.cpu_addr + P + 5, 3) == b"bus"
    arm.phys_write(pa + 2 * P, b"phys")
    assert dev.dma_read(buf.dma_handle + 2 * P, 4) == b"phys"
    # using the physical address as a bus address misses RAM altogether
    with pytest.raises(PhysicalAddressError):
        dev.dma_read(pa, 4)


def test_arm_cacheable_direct_map_alias_goes_stale(arm: dmamap.Machine) -> None:
    """Writing the buffer through page_address() (the cacheable direct map) instead of
    cpu_addr leaves the device with stale data until the line is cleaned."""
    dev = arm.add_device("nic")
    buf = dmamap.dma_alloc_coherent(dev, P)
    direct = dmamap.page_address(dmamap.dma_coherent_to_page(dev, buf.cpu_addr, buf.dma_handle))
    arm.kernel.write(direct, b"cached")
    assert dev.dma_read(buf.dma_handle, 6) == bytes(6)
    arm.clean_dcache_range(dmamap.virt_to_phys(direct), 6)
    assert dev.dma_read(buf.dma_handle, 6) == b"cached"


@pytest.mark.parametrize("platform", ["arm", "sram"])
def test_strict_memtype_refuses_mismatched_attributes_on_arm(platform: str) -> None:
    """With strict_memtype=True an ARM machine refuses the cacheable alias of an
    uncached coherent buffer (as x86 PAT does) instead of recording it, and the
    refused remap leaves no PTE and no report."""
    with dmamap.Machine(platform, ram=16 << 20, strict_memtype=True) as m:
        dev = m.add_device("d", bars=[0x1000])
        buf = dmamap.dma_alloc_coherent(dev, 2 * dmamap.PAGE_SIZE)
        mm = m.new_address_space()
        vma = mm.mmap(buf.size)
        pfn = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle)
        with pytest.raises(dmamap.MemtypeConflictError) as info:
            dmamap.remap_pfn_range(vma, vma.start, pfn, buf.size, vma.page_prot)
        assert info.value.addr == pfn << dmamap.PAGE_SHIFT
        assert mm.count_present(vma.start, buf.size) == 0
        assert m.attribute_reports == []
        dmamap.dma_mmap_coherent(dev, vma, *buf)   # the right attribute is still accepted
        mm.write(vma.start, b"ok")
        assert dev.dma_read(buf.dma_handle, 2) == b"ok"


def _run_scenario(seed: int, bulk: bool, cache_size: int, ways: int, write: bool,
                  vipt: bool = False) -> tuple[object, ...]:
    """One random history on a cacheable alias whose pages are scattered in physical
    memory: small accesses (lines cached, dirty, stale against DMA), one large access
    (in one call, or line by line), then a probe of the cache's state.  Returns all
    that can be observed: bytes read, counters, what the device sees."""
    rng = random.Random(seed)
    npages = 24
    with dmamap.Machine("arm", ram=RAM, cache_size=cache_size, cache_ways=ways) as m:
        if vipt:
            dmamap.vipt.set_vipt(m, True)
        dev = m.add_device("nic")
        buf = dmamap.dma_alloc_coherent(dev, npages * P)
        pa = dmamap.dma_coherent_to_pfn(dev, buf.cpu_addr, buf.dma_handle) << PAGE_SHIFT
        mm = m.new_address_space()
        vma = mm.mmap(npages * P)
        order = list(range(npages))
        if seed % 2:
            rng.shuffle(order)   # else contiguous in memory
        for i, pg in enumerate(order):
            dmamap.remap_pfn_range(vma, vma.start + i * P, (pa >> PAGE_SHIFT) + pg, P, vma.vm_page_prot)
        dev.dma_write(buf.dma_handle, bytes(rng.randrange(256) for _ in range(npages * P)))
        seen: list[object] = []

        def small_history(n: int) -> None:
            for _ in range(n):
                off = rng.randrange(npages * P - 200)
                size = rng.choice([1, 8, 64, 100, 200])
                kind = rng.randrange(3)
                if kind == 0:
                    mm.write(vma.start + off, bytes([rng.randrange(256)]) * size)
                elif kind == 1:
                    seen.append(mm.read(vma.start + off, size))
                else:
                    dev.dma_write(buf.dma_handle + off, bytes([rng.randrange(256)]) * size)

        small_history(150)
        start = rng.choice([0, LINE, P, 3 * P + 5 * LINE, 17])
        size = min(rng.choice([npages * P, (npages - 3) * P + 7 * LINE, 14 * P - 3]), npages * P - start)
        data = bytes(rng.randrange(256) for _ in range(size))
        dst = bytearray(size)
        first = -start % LINE or LINE   # the pieces end at line boundaries
        pieces = [(0, min(first, size))] + [(o, min(LINE, size - o)) for o in range(first, size, LINE)]
        if write:
            if bulk:
                mm.write(vma.start + start, data)
            else:
                for o, n in pieces:
                    mm.write(vma.start + start + o, data[o:o + n])
        elif bulk:
            mm.readinto(vma.start + start, dst)
        else:
            for o, n in pieces:
                dst[o:o + n] = mm.read(vma.start + start + o, n)
        st = m.stats
        seen += [bytes(dst), st.cache_hits, st.cache_misses, st.cache_writebacks]
        seen.append(dev.dma_read(buf.dma_handle, npages * P))
        small_history(300)
        st = m.stats
        seen += [st.cache_hits, st.cache_misses, st.cache_writebacks, dev.dma_read(buf.dma_handle, npages * P)]
        m.flush_dcache_range(pa, npages * P)
        seen.append(dev.dma_read(buf.dma_handle, npages * P))
        return tuple(seen)


@pytest.mark.parametrize("write", [False, True])
@pytest.mark.parametrize(("cache_size", "ways"), [(32 * 1024, 4), (4 * 1024, 2), (8 * 1024, 1), (16 * 1024, 16)])
def test_bulk_access_matches_line_by_line(cache_size: int, ways: int, write: bool) -> None:
    """A large read or write in one call (the bulk path, which moves the lines the
    access itself evicts again straight between memory and buffer) leaves exactly
    what the same bytes accessed line by line leave: the bytes read, the hit, miss
    and write-back counts, memory as the device sees it, and the cache's contents
    and LRU order (probed by later accesses, counters and a final flush)."""
    for seed in range(6):
        assert _run_scenario(seed, True, cache_size, ways, write) == _run_scenario(seed, False, cache_size, ways, write)


@pytest.mark.parametrize("write", [False, True])
def test_bulk_access_matches_line_by_line_vipt(write: bool) -> None:
    """The same on a virtually indexed cache (which keeps to the per-line model)."""
    for seed in range(3):
        bulk = _run_scenario(seed, True, 32 * 1024, 2, write, vipt=True)
        assert bulk == _run_scenario(seed, False, 32 * 1024, 2, write, vipt=True)
