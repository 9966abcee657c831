"""Hostile arguments at every public entry point, and at the C boundary.

Each bad call must raise TypeError (wrong type) or the specific DmamapError
subclass, and leave everything exactly as it was: the raw bytes of every
page-table page reachable from every root (read with ``phys_read``), machine and
address-space counters, the VMA list and the DMA bookkeeping.
"""

from __future__ import annotations

import array
import dataclasses
import gc
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dmamap
from dmamap import (
    PAGE_SIZE,
    AddressRangeError,
    BadPageError,
    DmaDoubleFreeError,
    DmaFreeError,
    DmamapError,
    DmaUseAfterFreeError,
    InvalidArgumentError,
    MachineClosedError,
    OutOfMemoryError,
    PgProt,
    PhysicalAddressError,
    SegmentationFault,
    StrategyError,
    VmaKindError,
    VmaNotMappedError,
)
from dmamap._binding import ffi, lib
from dmamap.testing.pagetable import snapshot

RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram")
U64 = 1 << 64
#: Integers no argument may take.
OUT_OF_RANGE = (-1, -PAGE_SIZE, U64, U64 + PAGE_SIZE, 1 << 100, -(1 << 100))
#: Values of the wrong type for an integer argument.
NOT_INTS = (None, "4096", 4096.0, b"\x00", [4096], object())


# ---- state snapshots ----

class World:
    """One machine with a user address space, a device, a live and a freed DMA
    buffer and a few VMAs in different states, plus everything needed to
    compare the whole state before and after a refused call."""

    def __init__(self, platform: str) -> None:
        self.m = dmamap.Machine(platform, ram=RAM)
        self.mm = self.m.new_address_space()
        self.dev = self.m.add_device("dev", bars=[0x2000], ports=[(0x300, 16)])
        self.buf = dmamap.dma_alloc_coherent(self.dev, 3 * PAGE_SIZE)
        self.sg = dmamap.dma_alloc_coherent_sg(self.dev, 6 * PAGE_SIZE, max_chunk_pages=2, seed=1)
        # a mapped coherent buffer (prefaulted), an empty VMA, a PFN-map VMA, an unmapped VMA
        self.mapped = self.mm.mmap(3 * PAGE_SIZE)
        dmamap.dma_mmap_coherent(self.dev, self.mapped, *self.buf, strategy="prefault")
        self.empty = self.mm.mmap(4 * PAGE_SIZE)
        self.pfnmap = self.mm.mmap(4 * PAGE_SIZE)
        self.pfnmap.vm_flags_set(dmamap.VmFlags.VM_PFNMAP | dmamap.VmFlags.VM_IO)
        gone = self.mm.mmap(PAGE_SIZE)
        self.mm.munmap(gone)
        self.gone = gone
        self.page = self.m.alloc_pages(1)
        self.freed_page = self.m.alloc_pages(1)
        self.m.free_pages(self.freed_page)
        self.mm.write(self.mapped.start, b"sentinel")
        self.mm.touch(self.mapped.start, 3)
        self.prot = self.empty.page_prot
        # freed last, so that no later allocation reuses its address
        dead = dmamap.dma_alloc_coherent(self.dev, PAGE_SIZE)
        dmamap.dma_free_coherent(self.dev, dead.size, dead.cpu_addr, dead.dma_handle)
        self.dead = dead
        self.other = dmamap.Machine(platform, ram=RAM)
        self.other_mm = self.other.new_address_space()
        self.other_vma = self.other_mm.mmap(PAGE_SIZE)
        self.other_page = self.other.alloc_pages(1)

    def close(self) -> None:
        self.other.close()
        self.m.close()

    def spaces(self) -> list[dmamap.AddressSpace]:
        return [self.m.kernel, self.mm]

    def state(self) -> dict[str, Any]:
        def vmas(space: dmamap.AddressSpace) -> list[tuple[int, int, int, int, int]]:
            return [(v.start, v.end, v.id, int(v.vm_flags), int(v.page_prot)) for v in space.vmas]

        pages = {}
        for pfn in (self.page.pfn, self.freed_page.pfn, dmamap.dma_coherent_to_pfn(self.dev, *self.buf[:2])):
            if self.m.pfn_valid(pfn):
                p = self.m.pfn_to_page(pfn)
                pages[pfn] = (p.refcount, p.mapcount, tuple(sorted(p.flags.items())))
        return {
            "tables": [snapshot(self.m, s.root) for s in self.spaces()],
            "machine": self.m.stats,
            "spaces": [s.stats for s in self.spaces()],
            "vmas": [vmas(s) for s in self.spaces()],
            "dma_live": sorted(self.dev.dma_debug.live),
            "dma_freed": sorted(self.dev.dma_debug.freed),
            "pages": pages,
            "memory_map": self.m.memory_map,
            "other": (snapshot(self.other, self.other_mm.root), self.other.stats),
            "data": self.m.phys_read(dmamap.dma_coherent_to_pfn(self.dev, *self.buf[:2]) << 12, 64),
        }

    def refuses(self, exc: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], object],
                *, tlb_miss: bool = False) -> None:
        """``fn()`` raises ``exc`` and changes nothing at all -- but for one TLB
        miss when ``tlb_miss`` (a CPU access to an unmapped address in range
        looks the TLB up before it faults)."""
        before = self.state()
        with pytest.raises(exc) as info:
            fn()
        assert isinstance(info.value, (DmamapError, TypeError)), info.value
        after = self.state()
        if tlb_miss:
            user = after["spaces"][1]
            assert user.tlb_misses == before["spaces"][1].tlb_misses + 1
            after["spaces"][1] = dataclasses.replace(user, tlb_misses=user.tlb_misses - 1)
        for key in before:
            assert after[key] == before[key], f"{key} changed by a refused call raising {info.value!r}"


@pytest.fixture(params=PLATFORMS)
def w(request: pytest.FixtureRequest) -> Iterator[World]:
    world = World(request.param)
    try:
        yield world
    finally:
        world.close()


def hostile_ints(exc_for_range: type[BaseException] = InvalidArgumentError) -> list[tuple[object, type]]:
    return [(v, exc_for_range) for v in OUT_OF_RANGE] + [(v, TypeError) for v in NOT_INTS] + [(True, TypeError)]


# ---- Machine ----

@pytest.mark.parametrize(("kwargs", "exc"), [
    ({"arch": 86}, TypeError),
    ({"arch": None}, TypeError),
    ({"arch": "no-such-platform"}, dmamap.BackendError),
    ({"ram": "16M"}, TypeError),
    ({"ram": 16.0 * 2**20}, TypeError),
    ({"ram": -RAM}, InvalidArgumentError),
    ({"ram": 0}, InvalidArgumentError),
    ({"ram": RAM + 1}, InvalidArgumentError),
    ({"ram": 1 << 64}, InvalidArgumentError),
    ({"ram": 1 << 41}, InvalidArgumentError),
    ({"sram": -PAGE_SIZE}, InvalidArgumentError),
    ({"sram": 100}, InvalidArgumentError),
    ({"sram": 1 << 40}, InvalidArgumentError),
    ({"arch": "arm", "cache_ways": 0}, InvalidArgumentError),
    ({"arch": "arm", "cache_ways": -4}, InvalidArgumentError),
    ({"arch": "arm", "cache_ways": 1 << 40}, InvalidArgumentError),
    ({"arch": "arm", "cache_ways": "4"}, TypeError),
    ({"arch": "arm", "cache_size": 1000}, InvalidArgumentError),
    ({"arch": "arm", "cache_size": -1}, InvalidArgumentError),
    ({"arch": "arm", "cache_size": 1 << 40}, InvalidArgumentError),
    ({"arch": "arm", "cache_size": 3 * 4 * 64}, InvalidArgumentError),
])
def test_machine_constructor_refuses_and_leaks_nothing(kwargs: dict[str, Any], exc: type[BaseException]) -> None:
    kwargs = {"arch": "x86", "ram": RAM, **kwargs}
    fds = len(os.listdir("/proc/self/fd"))
    open_before = len(list(dmamap.machine.open_machines()))
    for _ in range(3):
        with pytest.raises(exc):
            dmamap.Machine(**kwargs)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds, "a refused Machine() leaked its memfd"
    assert len(list(dmamap.machine.open_machines())) == open_before


def test_machine_methods_refuse_hostile_ints(w: World) -> None:
    m = w.m
    calls: list[tuple[str, Callable[[object], object]]] = [
        ("phys_read pa", lambda v: m.phys_read(v, 8)),
        ("phys_read n", lambda v: m.phys_read(m.ram_base, v)),
        ("phys_write pa", lambda v: m.phys_write(v, b"x")),
        ("pfn_valid", lambda v: m.pfn_valid(v)),
        ("pfn_to_page", lambda v: m.pfn_to_page(v)),
        ("phys_to_virt", lambda v: m.phys_to_virt(v)),
        ("virt_to_page", lambda v: m.virt_to_page(v)),
        ("virt_to_phys", lambda v: m.virt_to_phys(v)),
        ("alloc_pages n", lambda v: m.alloc_pages(v)),
        ("alloc_pages align", lambda v: m.alloc_pages(1, align=v)),
        ("free_pages n", lambda v: m.free_pages(w.page, v)),
        ("flush", lambda v: m.flush_dcache_range(v, PAGE_SIZE)),
        ("invalidate", lambda v: m.invalidate_dcache_range(m.ram_base, v)),
        ("clean", lambda v: m.clean_dcache_range(v, v)),
        ("memtype_reserve", lambda v: m.memtype_reserve(v, PAGE_SIZE, "UC-" if m.isa == "x86_64" else "NORMAL")),
        ("memtype_lookup", lambda v: m.memtype_lookup(v)),
        ("region_of", lambda v: m.region_of(v)),
        ("port_read port", lambda v: m.port_read(v)),
        ("port_read size", lambda v: m.port_read(0x300, v)),
        ("port_write value", lambda v: m.port_write(0x300, v)),
    ]
    for name, fn in calls:
        for value, exc in hostile_ints():
            if name == "port_read size" and value is True:
                continue   # a bool is an int to cffi: port_read(p, True) is a 1-byte read
            try:
                w.refuses(exc, lambda: fn(value))
            except AssertionError as e:
                raise AssertionError(f"{name}({value!r}): {e}") from e


def test_machine_methods_refuse_bad_values(w: World) -> None:
    m = w.m
    ram_end = m.ram_base + m.ram_size
    w.refuses(PhysicalAddressError, lambda: m.phys_read(ram_end, 8))
    w.refuses(PhysicalAddressError, lambda: m.phys_read(ram_end - 4, 8))
    w.refuses(PhysicalAddressError, lambda: m.phys_read(m.ram_base, 1 << 40))           # no host buffer either
    w.refuses(PhysicalAddressError, lambda: m.phys_read(U64 - 8, 16))
    w.refuses(PhysicalAddressError, lambda: m.phys_write(U64 - 1, b"ab"))
    w.refuses(PhysicalAddressError, lambda: m.phys_write(w.dev.bar(0)[0], b"abcd"))  # MMIO is not memory
    w.refuses(TypeError, lambda: m.phys_write(m.ram_base, "text"))
    w.refuses(TypeError, lambda: m.phys_write(m.ram_base, [1, 2]))
    w.refuses(BadPageError, lambda: m.pfn_to_page(0xFFFF_FFFF))
    w.refuses(dmamap.VirtToPageError, lambda: m.virt_to_page(0x1000))
    w.refuses(dmamap.VirtToPageError, lambda: m.virt_to_page(m.page_offset + m.ram_size))
    w.refuses(dmamap.VirtToPageError, lambda: m.phys_to_virt(w.dev.bar(0)[0]))
    w.refuses(InvalidArgumentError, lambda: m.alloc_pages(0))
    w.refuses(OutOfMemoryError, lambda: m.alloc_pages(RAM // PAGE_SIZE + 1))
    w.refuses(OutOfMemoryError, lambda: m.alloc_pages((1 << 64) - 1))
    w.refuses(InvalidArgumentError, lambda: m.alloc_pages(1, align=3))
    w.refuses(InvalidArgumentError, lambda: m.alloc_pages(1, align=(1 << 63) + 1))
    w.refuses(OutOfMemoryError, lambda: m.alloc_pages(1, align=1 << 62))
    # pages: wrong type, another machine, freed, double free, still mapped
    w.refuses(TypeError, lambda: m.free_pages(w.page.pfn))           # type: ignore[arg-type]
    w.refuses(TypeError, lambda: m.get_page("page"))                 # type: ignore[arg-type]
    w.refuses(InvalidArgumentError, lambda: m.free_pages(w.other_page))
    w.refuses(InvalidArgumentError, lambda: m.get_page(w.other_page))
    w.refuses(InvalidArgumentError, lambda: m.page_address(w.other_page))
    w.refuses(InvalidArgumentError, lambda: m.free_pages(w.freed_page))
    w.refuses(BadPageError, lambda: m.get_page(w.freed_page))
    w.refuses(BadPageError, lambda: m.put_page(w.page))              # would drop the last reference
    w.refuses(InvalidArgumentError, lambda: m.free_pages(w.page, 0))
    w.refuses(InvalidArgumentError, lambda: m.free_pages(w.page, RAM))
    w.refuses(InvalidArgumentError, lambda: m.free_pages(dmamap.Page(m, 0xFFFF_FFFF)))
    w.refuses(InvalidArgumentError, lambda: m.memtype_reserve(m.ram_base, PAGE_SIZE, "BOGUS"))
    w.refuses(TypeError, lambda: m.memtype_reserve(m.ram_base, PAGE_SIZE, 3))   # type: ignore[arg-type]
    w.refuses(InvalidArgumentError, lambda: m.memtype_reserve(m.ram_base, 0, m.kernel.vmas[0].page_prot.cache))
    w.refuses(InvalidArgumentError, lambda: m.memtype_reserve(U64 - PAGE_SIZE, 2 * PAGE_SIZE, "WB" if m.isa ==
                                                              "x86_64" else "NORMAL"))
    w.refuses(InvalidArgumentError, lambda: m.memtype_free(m.ram_base, PAGE_SIZE, "WB" if m.isa == "x86_64"
                                                           else "NORMAL"))
    w.refuses(InvalidArgumentError, lambda: m.port_read(0x300, 3))
    w.refuses(InvalidArgumentError, lambda: m.port_read(0x300, 8))
    w.refuses(InvalidArgumentError, lambda: m.port_read(0x300, -1))
    w.refuses(dmamap.UnclaimedIOError, lambda: m.port_read(0x10000))
    w.refuses(dmamap.UnclaimedIOError, lambda: m.port_read(0xFFFF, 2))
    w.refuses(InvalidArgumentError, lambda: m.remove_device("nobody"))
    w.refuses(InvalidArgumentError, lambda: m.remove_device(w.other.add_device("x")))


def test_add_device_refuses(w: World) -> None:
    m = w.m
    bad: list[tuple[Callable[[], object], type[BaseException]]] = [
        (lambda: m.add_device(7), TypeError),
        (lambda: m.add_device(""), InvalidArgumentError),
        (lambda: m.add_device("dev"), InvalidArgumentError),                  # name taken
        (lambda: m.add_device("d", bars=[-1]), InvalidArgumentError),
        (lambda: m.add_device("d", bars=[0]), InvalidArgumentError),
        (lambda: m.add_device("d", bars=[1 << 33]), InvalidArgumentError),
        (lambda: m.add_device("d", bars=["4096"]), TypeError),
        (lambda: m.add_device("d", bars=[4096.0]), TypeError),
        (lambda: m.add_device("d", bars=[dmamap.Bar(4096.5)]), TypeError),
        (lambda: m.add_device("d", bars=[1 << 32] * 64), InvalidArgumentError),  # MMIO window exhausted
        (lambda: m.add_device("d", bars=4096), TypeError),
        (lambda: m.add_device("d", ports=[(0xFFFF, 2)]), InvalidArgumentError),
        (lambda: m.add_device("d", ports=[(-1, 2)]), InvalidArgumentError),
        (lambda: m.add_device("d", ports=[(0x100, 0)]), InvalidArgumentError),
        (lambda: m.add_device("d", ports=[(0x300, 1)]), InvalidArgumentError),  # overlaps "dev"
        (lambda: m.add_device("d", ports=[(1.5, 2)]), TypeError),
        (lambda: m.add_device("d", ports=[("a", 2)]), TypeError),
        (lambda: m.add_device("d", ports=[(1, 2, 3, 4, 5, 6)]), TypeError),
        (lambda: m.add_device("d", bars=[4096], read=5), TypeError),
        (lambda: m.add_device("d", bars=[dmamap.Bar(4096, write="w")]), TypeError),
        (lambda: dmamap.Device("machine", "d"), TypeError),                  # type: ignore[arg-type]
    ]
    for fn, exc in bad:
        w.refuses(exc, fn)
    assert set(m.devices) == {"dev"}


# ---- AddressSpace ----

def test_mmap_refuses(w: World) -> None:
    mm = w.mm
    for value, exc in hostile_ints():
        w.refuses(exc, lambda: mm.mmap(value))
        w.refuses(exc, lambda: mm.mmap(PAGE_SIZE, addr=value))
        if value is not None:   # align=None is the default
            w.refuses(exc, lambda: mm.mmap(PAGE_SIZE, align=value))
        w.refuses(exc, lambda: mm.mmap(PAGE_SIZE, flags=value))
    w.refuses(InvalidArgumentError, lambda: mm.mmap(0))
    w.refuses(InvalidArgumentError, lambda: mm.mmap(U64 - 1))                 # wraps when rounded up
    w.refuses(OutOfMemoryError, lambda: mm.mmap(U64 - PAGE_SIZE))
    w.refuses(OutOfMemoryError, lambda: mm.mmap(1 << 62))
    w.refuses(TypeError, lambda: mm.mmap(PAGE_SIZE, prot=7))                  # type: ignore[arg-type]
    w.refuses(TypeError, lambda: mm.mmap(PAGE_SIZE, prot=None))               # type: ignore[arg-type]
    w.refuses(InvalidArgumentError, lambda: mm.mmap(PAGE_SIZE, prot="rwq"))
    w.refuses(InvalidArgumentError, lambda: mm.mmap(PAGE_SIZE, flags=0x20))   # not a vm_flags bit
    w.refuses(VmaKindError, lambda: mm.mmap(PAGE_SIZE, flags=dmamap.VmFlags.VM_PFNMAP | dmamap.VmFlags.VM_MIXEDMAP))
    w.refuses(InvalidArgumentError, lambda: mm.mmap(PAGE_SIZE, align=3 * PAGE_SIZE))
    w.refuses(OutOfMemoryError, lambda: mm.mmap(PAGE_SIZE, align=1 << 63))
    w.refuses(OutOfMemoryError, lambda: w.m.kernel.mmap(PAGE_SIZE, align=1 << 63))   # used to map kernel VA 0
    w.refuses(AddressRangeError, lambda: mm.mmap(PAGE_SIZE, addr=0x1234))      # misaligned fixed address
    w.refuses(AddressRangeError, lambda: mm.mmap(PAGE_SIZE, addr=U64 - PAGE_SIZE))   # kernel half
    w.refuses(AddressRangeError, lambda: mm.mmap(2 * PAGE_SIZE, addr=U64 - PAGE_SIZE))
    w.refuses(AddressRangeError, lambda: mm.mmap(PAGE_SIZE, addr=1 << 50))
    w.refuses(AddressRangeError, lambda: w.m.kernel.mmap(PAGE_SIZE, addr=0x1000_0000))
    w.refuses(dmamap.PteBusyError, lambda: mm.mmap(PAGE_SIZE, addr=w.mapped.start))
    w.refuses(dmamap.PteBusyError, lambda: mm.mmap(8 * PAGE_SIZE, addr=w.mapped.start - 4 * PAGE_SIZE))
    w.refuses(TypeError, lambda: dmamap.AddressSpace("machine"))              # type: ignore[arg-type]


def test_munmap_refuses(w: World) -> None:
    mm = w.mm
    w.refuses(VmaNotMappedError, lambda: mm.munmap(w.gone))
    w.refuses(VmaNotMappedError, lambda: mm.munmap(w.other_vma))
    w.refuses(VmaNotMappedError, lambda: w.m.kernel.munmap(w.mapped))
    w.refuses(TypeError, lambda: mm.munmap(w.mapped.start))                   # type: ignore[arg-type]
    w.refuses(TypeError, lambda: mm.munmap(None))                             # type: ignore[arg-type]


def test_accesses_refuse(w: World) -> None:
    mm = w.mm
    for value, exc in hostile_ints():
        w.refuses(exc, lambda: mm.read(value, 1))
        w.refuses(exc, lambda: mm.read(w.mapped.start, value))
        w.refuses(exc, lambda: mm.write(value, b"x"))
        w.refuses(exc, lambda: mm.read32(value))
        w.refuses(exc, lambda: mm.write32(w.mapped.start, value))
        w.refuses(exc, lambda: mm.translate(value))
        w.refuses(exc, lambda: mm.find_vma(value))
        w.refuses(exc, lambda: mm.touch(value))
        w.refuses(exc, lambda: mm.touch(w.mapped.start, value))
        w.refuses(exc, lambda: mm.touch(w.mapped.start, 2, value))
        w.refuses(exc, lambda: mm.touch_list([w.mapped.start, value]))
        w.refuses(exc, lambda: mm.count_present(value, PAGE_SIZE))
    big = w.mapped.start
    # too long: runs off the VMA into the guard gap, refused before any host buffer or fault
    w.refuses(SegmentationFault, lambda: mm.read(big, 1 << 40))
    w.refuses(SegmentationFault, lambda: mm.read(big, U64 - 1))
    w.refuses(SegmentationFault, lambda: mm.read(U64 - 4, 8))
    w.refuses(SegmentationFault, lambda: mm.write(U64 - 4, b"12345678"))
    w.refuses(SegmentationFault, lambda: mm.write(w.empty.start, bytes(1 << 20)))
    w.refuses(SegmentationFault, lambda: mm.read(0, 4))
    w.refuses(SegmentationFault, lambda: mm.read(w.gone.start, 4), tlb_miss=True)
    w.refuses(SegmentationFault, lambda: mm.write(w.mapped.end, b"x"), tlb_miss=True)
    w.refuses(SegmentationFault, lambda: mm.read(1 << 50, 4))
    w.refuses(SegmentationFault, lambda: mm.read64(U64 - 4))
    w.refuses(TypeError, lambda: mm.write(big, "text"))                       # type: ignore[arg-type]
    w.refuses(TypeError, lambda: mm.write(big, 12))                           # type: ignore[arg-type]
    w.refuses(TypeError, lambda: mm.write(big, [1, 2, 3]))                    # type: ignore[arg-type]
    w.refuses(InvalidArgumentError, lambda: mm.write8(big, 256))
    w.refuses(InvalidArgumentError, lambda: mm.write16(big, 1 << 16))
    w.refuses(InvalidArgumentError, lambda: mm.write64(big, -1))
    w.refuses(TypeError, lambda: mm.write8(big, 1.0))                         # type: ignore[arg-type]
    w.refuses(AddressRangeError, lambda: mm.translate(1 << 50))
    w.refuses(AddressRangeError, lambda: mm.translate(U64 - PAGE_SIZE))
    w.refuses(InvalidArgumentError, lambda: mm.touch(big, 2, 0))              # stride 0
    w.refuses(InvalidArgumentError, lambda: mm.touch(big, 1 << 63, 1 << 20))  # wraps
    w.refuses(InvalidArgumentError, lambda: mm.count_present(U64 - PAGE_SIZE, 2 * PAGE_SIZE))
    w.refuses(TypeError, lambda: mm.touch_list(5))                            # type: ignore[arg-type]
    # a memoryview of 4-byte items writes all of its bytes
    data = memoryview(array.array("I", [0x11223344, 0x55667788]))
    mm.write(big, data)
    assert mm.read(big, 8) == data.tobytes()
    mm.write(big, memoryview(b"abcdefgh")[::2])
    assert mm.read(big, 4) == b"aceg"
    assert mm.read(big, 0) == b"" and mm.count_present(1 << 50, PAGE_SIZE) == 0


def test_vma_methods_refuse(w: World) -> None:
    v = w.empty
    for value, exc in hostile_ints():
        w.refuses(exc, lambda: v.vm_flags_set(value))
        w.refuses(exc, lambda: v.vm_flags_clear(value))
        w.refuses(exc, lambda: setattr(v, "page_prot", value))
        w.refuses(exc, lambda: v.set_builtin_fault("pfn", [(value, 1)]))
        w.refuses(exc, lambda: v.set_builtin_fault("pfn", [(w.m.ram_base >> 12, value)]))
        w.refuses(exc, lambda: v.set_builtin_fault("pfn", [(w.m.ram_base >> 12, 1)], first_page=value))
        w.refuses(exc, lambda: v.set_builtin_fault("pfn", [(w.m.ram_base >> 12, 1)], fault_around=value))
        w.refuses(exc, lambda: v.set_pio_trap(value))
    w.refuses(InvalidArgumentError, lambda: v.vm_flags_set(0x20))
    w.refuses(VmaKindError, lambda: w.pfnmap.vm_flags_set(dmamap.VmFlags.VM_MIXEDMAP))
    w.refuses(InvalidArgumentError, lambda: setattr(v, "page_prot", 0x1000))            # address bits
    w.refuses(InvalidArgumentError, lambda: setattr(v, "page_prot", 1 << 48))
    w.refuses(InvalidArgumentError, lambda: setattr(v, "page_prot", 0))
    other_isa = "aarch64" if w.m.isa == "x86_64" else "x86_64"
    w.refuses(InvalidArgumentError, lambda: setattr(v, "page_prot", PgProt.make(other_isa)))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("page?", [(1, 1)]))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("pfn", []))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("pfn", [(1, 0)]))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("pfn", [(1 << 40, 1)]))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("pfn", [(U64 - 1, 2)]))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("pfn", [(1, 1)], first_page=1))
    w.refuses(InvalidArgumentError, lambda: v.set_builtin_fault("pfn", [(1, 1)], fault_around=513))
    w.refuses(TypeError, lambda: v.set_builtin_fault("pfn", [(1, 1, 1)]))
    w.refuses(TypeError, lambda: v.set_builtin_fault("pfn", [1, 2]))
    w.refuses(TypeError, lambda: v.set_builtin_fault("pfn", 5))               # type: ignore[arg-type]
    w.refuses(TypeError, lambda: v.set_fault_handler(5))                      # type: ignore[arg-type]
    w.refuses(InvalidArgumentError, lambda: v.set_pio_trap(0x10000))
    for dead in (w.gone, w.other_vma):
        if dead is w.other_vma:
            continue   # another machine's VMA is live: operations on it act on its own mm
        w.refuses(VmaNotMappedError, lambda: dead.vm_flags_set(dmamap.VmFlags.VM_IO))
        w.refuses(VmaNotMappedError, lambda: setattr(dead, "page_prot", w.prot))
        w.refuses(VmaNotMappedError, lambda: dead.set_builtin_fault("pfn", [(1, 1)]))
        w.refuses(VmaNotMappedError, lambda: dead.set_fault_handler(lambda f: None))
        w.refuses(VmaNotMappedError, lambda: dead.set_pio_trap(0x300))
        w.refuses(VmaNotMappedError, lambda: dead.vm_flags)


def test_pte_primitives_refuse(w: World) -> None:
    m, v, p = w.m, w.pfnmap, w.prot
    pfn = w.m.ram_base >> 12
    prims: list[tuple[str, Callable[[object], object]]] = [
        ("remap addr", lambda x: dmamap.remap_pfn_range(v, x, pfn, PAGE_SIZE, p)),
        ("remap pfn", lambda x: dmamap.remap_pfn_range(v, v.start, x, PAGE_SIZE, p)),
        ("remap size", lambda x: dmamap.remap_pfn_range(v, v.start, pfn, x, p)),
        ("remap prot", lambda x: dmamap.remap_pfn_range(v, v.start, pfn, PAGE_SIZE, x)),
        ("insert_pfn addr", lambda x: dmamap.vmf_insert_pfn(v, x, pfn)),
        ("insert_pfn pfn", lambda x: dmamap.vmf_insert_pfn(v, v.start, x)),
        ("insert_pfn_prot prot", lambda x: dmamap.vmf_insert_pfn_prot(v, v.start, pfn, x)),
        ("insert_mixed addr", lambda x: dmamap.vmf_insert_mixed(v, x, pfn)),
        ("insert_page addr", lambda x: dmamap.vm_insert_page(w.empty, x, w.page)),
        ("zap addr", lambda x: dmamap.zap_vma_ptes(v, x, PAGE_SIZE)),
        ("zap size", lambda x: dmamap.zap_vma_ptes(v, v.start, x)),
        ("change_protection addr", lambda x: dmamap.change_protection(w.mapped, x, PAGE_SIZE, p)),
        ("change_protection size", lambda x: dmamap.change_protection(w.mapped, w.mapped.start, x, p)),
        ("change_protection prot", lambda x: dmamap.change_protection(w.mapped, w.mapped.start, PAGE_SIZE, x)),
    ]
    for name, fn in prims:
        for value, exc in hostile_ints():
            try:
                w.refuses(exc, lambda: fn(value))
            except AssertionError as e:
                raise AssertionError(f"{name}({value!r}): {e}") from e
    for fn in (lambda x: dmamap.remap_pfn_range(x, 0, pfn, PAGE_SIZE, p), lambda x: dmamap.vmf_insert_pfn(x, 0, 1),
               lambda x: dmamap.vmf_insert_mixed(x, 0, 1), lambda x: dmamap.vm_insert_page(x, 0, w.page),
               lambda x: dmamap.zap_vma_ptes(x, 0, PAGE_SIZE), lambda x: dmamap.change_protection(x, 0, 1, p)):
        for not_vma in (None, w.mm, v.start, "vma"):
            w.refuses(TypeError, lambda: fn(not_vma))
        w.refuses(VmaNotMappedError, lambda: fn(w.gone))
    dead, s = w.gone, w.gone.start
    other_isa = "aarch64" if m.isa == "x86_64" else "x86_64"
    bad: list[tuple[Callable[[], object], type[BaseException]]] = [
        # remap_pfn_range
        (lambda: dmamap.remap_pfn_range(v, v.start + 1, pfn, PAGE_SIZE, p), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, pfn, 0, p), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, pfn, U64 - 1, p), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, pfn, 5 * PAGE_SIZE, p), AddressRangeError),
        (lambda: dmamap.remap_pfn_range(v, v.end, pfn, PAGE_SIZE, p), AddressRangeError),
        (lambda: dmamap.remap_pfn_range(v, v.start - PAGE_SIZE, pfn, PAGE_SIZE, p), AddressRangeError),
        (lambda: dmamap.remap_pfn_range(v, U64 - PAGE_SIZE, pfn, 2 * PAGE_SIZE, p), AddressRangeError),
        (lambda: dmamap.remap_pfn_range(v, v.start, 1 << 36, PAGE_SIZE, p), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, U64 - 1, 2 * PAGE_SIZE, p), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, pfn, PAGE_SIZE, PgProt.make(other_isa)), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, pfn, PAGE_SIZE, int(p) | 0x5000), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(v, v.start, pfn, PAGE_SIZE, 0), InvalidArgumentError),
        (lambda: dmamap.remap_pfn_range(w.mapped, w.mapped.start, pfn, PAGE_SIZE, p), dmamap.PteBusyError),
        (lambda: dmamap.remap_pfn_range(dead, s, pfn, PAGE_SIZE, p), VmaNotMappedError),
        # vmf_insert_pfn / _prot / _mixed
        (lambda: dmamap.vmf_insert_pfn(w.empty, w.empty.start, pfn), VmaKindError),
        (lambda: dmamap.vmf_insert_pfn(v, v.start + 8, 0x1), InvalidArgumentError),
        (lambda: dmamap.vmf_insert_pfn(v, v.end, 0x1), AddressRangeError),
        (lambda: dmamap.vmf_insert_pfn(v, v.start, 1 << 36), InvalidArgumentError),
        (lambda: dmamap.vmf_insert_pfn_prot(v, v.start, 1, int(p) | (1 << 40)), InvalidArgumentError),
        (lambda: dmamap.vmf_insert_mixed(v, v.start, pfn), VmaKindError),       # not VM_MIXEDMAP
        (lambda: dmamap.vmf_insert_pfn(w.mapped, w.mapped.start, pfn + 77), dmamap.PteBusyError),
        # vm_insert_page
        (lambda: dmamap.vm_insert_page(w.empty, w.empty.start, w.other_page), InvalidArgumentError),
        (lambda: dmamap.vm_insert_page(w.empty, w.empty.start, w.freed_page), BadPageError),
        (lambda: dmamap.vm_insert_page(w.empty, w.empty.start, w.page.pfn), TypeError),
        (lambda: dmamap.vm_insert_page(w.empty, w.empty.start + 1, w.page), InvalidArgumentError),
        (lambda: dmamap.vm_insert_page(w.empty, w.empty.end, w.page), AddressRangeError),
        (lambda: dmamap.vm_insert_page(v, v.start, w.page), VmaKindError),
        (lambda: dmamap.vm_insert_page(w.empty, w.empty.start, dmamap.Page(m, 0xFFFF_FFF)), BadPageError),
        # zap_vma_ptes / change_protection
        (lambda: dmamap.zap_vma_ptes(v, v.start, 0), InvalidArgumentError),
        (lambda: dmamap.zap_vma_ptes(v, v.start + 1, PAGE_SIZE), InvalidArgumentError),
        (lambda: dmamap.zap_vma_ptes(v, v.start, U64 - PAGE_SIZE), AddressRangeError),
        (lambda: dmamap.change_protection(w.mapped, w.mapped.start, 0, p), InvalidArgumentError),
        (lambda: dmamap.change_protection(w.mapped, w.mapped.end, PAGE_SIZE, p), AddressRangeError),
        (lambda: dmamap.change_protection(w.mapped, w.mapped.start, PAGE_SIZE, 1 << 30), InvalidArgumentError),
        (lambda: dmamap.change_protection(w.mapped, w.mapped.start, PAGE_SIZE, PgProt.make(other_isa)),
         InvalidArgumentError),
    ]
    for fn, exc in bad:
        w.refuses(exc, fn)


# ---- device and DMA helpers ----

def test_device_dma_refuses(w: World) -> None:
    dev = w.dev
    for value, exc in hostile_ints():
        w.refuses(exc, lambda: dev.dma_read(value, 4))
        w.refuses(exc, lambda: dev.dma_read(w.buf.dma_handle, value))
        w.refuses(exc, lambda: dev.dma_write(value, b"x"))
    w.refuses((PhysicalAddressError, InvalidArgumentError), lambda: dev.dma_read(U64 - 2, 4))
    w.refuses(PhysicalAddressError, lambda: dev.dma_read(w.buf.dma_handle, 1 << 40))
    w.refuses(PhysicalAddressError, lambda: dev.dma_read(w.buf.dma_handle, U64 - 1))
    w.refuses(TypeError, lambda: dev.dma_write(w.buf.dma_handle, "text"))     # type: ignore[arg-type]
    w.refuses(TypeError, lambda: dev.dma_write(w.buf.dma_handle, None))       # type: ignore[arg-type]
    ram_end = w.m.backend.phys_to_dma(dev, w.m.ram_base + w.m.ram_size)
    w.refuses(PhysicalAddressError, lambda: dev.dma_write(ram_end, b"x"))
    w.refuses(PhysicalAddressError, lambda: dev.dma_write(ram_end - 2, b"xyzw"))


def test_dma_helpers_refuse(w: World) -> None:
    dev, buf, dead = w.dev, w.buf, w.dead
    for value, exc in hostile_ints():
        w.refuses(exc, lambda: dmamap.dma_alloc_coherent(dev, value))
        w.refuses(exc, lambda: dmamap.dma_alloc_coherent_sg(dev, value))
        w.refuses(exc, lambda: dmamap.dma_alloc_coherent_sg(dev, 4 * PAGE_SIZE, max_chunk_pages=value))
        w.refuses(exc, lambda: dmamap.mmio_map(w.empty, value, PAGE_SIZE))
        w.refuses(exc, lambda: dmamap.mmio_map(w.empty, dev.bar(0)[0], value))
        w.refuses(exc, lambda: dmamap.pio_map(w.empty, value, 4))
        w.refuses(exc, lambda: dmamap.pio_map(w.empty, 0x300, value))
        w.refuses(exc, lambda: w.mm.mmap(PAGE_SIZE, offset=value))   # the helpers' offset: vm_pgoff
        w.refuses(exc, lambda: setattr(w.empty, "vm_pgoff", value))
    # wrong types
    for not_dev in (None, "dev", w.m, 5):
        w.refuses(TypeError, lambda: dmamap.dma_alloc_coherent(not_dev, PAGE_SIZE))
        w.refuses(TypeError, lambda: dmamap.dma_free_coherent(not_dev, *buf[2:], *buf[:2]))
        w.refuses(TypeError, lambda: dmamap.dma_mmap_coherent(not_dev, w.empty, *buf))
    for not_vma in (None, "vma", w.mm, 5):
        w.refuses(TypeError, lambda: dmamap.dma_mmap_coherent(dev, not_vma, *buf))
        w.refuses(TypeError, lambda: dmamap.dma_mmap_coherent_sg(dev, not_vma, w.sg))
        w.refuses(TypeError, lambda: dmamap.mmio_map(not_vma, dev.bar(0)[0], PAGE_SIZE))
        w.refuses(TypeError, lambda: dmamap.pio_map(not_vma, 0x300, 4))
    w.refuses(TypeError, lambda: dmamap.dma_free_coherent_sg(dev, [w.sg]))    # type: ignore[arg-type]
    w.refuses(TypeError, lambda: dmamap.dma_mmap_coherent_sg(dev, w.empty, None))   # type: ignore[arg-type]
    # sizes and memory
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_alloc_coherent(dev, 0))
    w.refuses(OutOfMemoryError, lambda: dmamap.dma_alloc_coherent(dev, 1 << 40))
    w.refuses(OutOfMemoryError, lambda: dmamap.dma_alloc_coherent(dev, U64 - 1))
    w.refuses(OutOfMemoryError, lambda: dmamap.dma_alloc_coherent_sg(dev, (1 << 30) * PAGE_SIZE))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_alloc_coherent_sg(dev, 0))
    # wrong size / address / handle, double free, use after free
    w.refuses(DmaFreeError, lambda: dmamap.dma_free_coherent(dev, buf.size + 1, buf.cpu_addr, buf.dma_handle))
    w.refuses(DmaFreeError, lambda: dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr + PAGE_SIZE,
                                                             buf.dma_handle))
    w.refuses(DmaFreeError, lambda: dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle + 1))
    w.refuses(DmaFreeError, lambda: dmamap.dma_free_coherent(dev, *buf[2:], *buf[:2]))   # still mapped
    w.refuses(DmaDoubleFreeError, lambda: dmamap.dma_free_coherent(dev, dead.size, dead.cpu_addr,
                                                                   dead.dma_handle))
    w.refuses(DmaUseAfterFreeError, lambda: dmamap.dma_mmap_coherent(dev, w.empty, *dead))
    w.refuses(DmaUseAfterFreeError, lambda: dmamap.dma_coherent_to_pfn(dev, dead.cpu_addr, dead.dma_handle))
    # dma_direct_mmap: a size below the allocation is allowed; a VMA past it is -ENXIO
    w.refuses(dmamap.MmapError, lambda: dmamap.dma_mmap_coherent(dev, w.empty, buf.cpu_addr, buf.dma_handle, 1))
    w.refuses(TypeError, lambda: dmamap.dma_free_coherent(dev, buf.size, float(buf.cpu_addr), buf.dma_handle))
    w.refuses(TypeError, lambda: dmamap.dma_free_coherent(dev, buf.size, str(buf.cpu_addr), buf.dma_handle))
    # mapping: offsets, room, other machine, unmapped VMA, strategies
    w.refuses(InvalidArgumentError, lambda: w.mm.mmap(PAGE_SIZE, offset=1))
    past = {n: w.mm.mmap(PAGE_SIZE, offset=n * PAGE_SIZE) for n in (3, 5, 6)}   # vm_pgoff 3, 5, 6
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent(dev, past[3], *buf))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent(dev, w.empty, *buf))   # VMA too large
    small = w.mm.mmap(PAGE_SIZE)
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent(dev, w.other_vma, *buf))
    w.refuses(VmaNotMappedError, lambda: dmamap.dma_mmap_coherent(dev, w.gone, *buf))
    w.refuses(StrategyError, lambda: dmamap.dma_mmap_coherent(dev, small, *buf, strategy="bogus"))
    w.refuses(dmamap.PteBusyError, lambda: dmamap.dma_mmap_coherent(dev, w.mapped, *buf, strategy="prefault"))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent_sg(dev, past[6], w.sg))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent_sg(dev, small, w.sg, nr_pages=0))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent_sg(dev, small, w.sg, nr_pages=2))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent_sg(dev, past[5], w.sg, nr_pages=2))
    w.refuses(VmaNotMappedError, lambda: dmamap.dma_mmap_coherent_sg(dev, w.gone, w.sg))
    w.refuses(InvalidArgumentError, lambda: dmamap.dma_mmap_coherent_sg(dev, w.other_vma, w.sg, nr_pages=1))
    w.refuses(StrategyError, lambda: dmamap.dma_mmap_coherent_sg(dev, small, w.sg, strategy="x"))
    # MMIO and port I/O
    bar = dev.bar(0)[0]
    w.refuses(InvalidArgumentError, lambda: dmamap.mmio_map(small, bar + 1, PAGE_SIZE))
    w.refuses(InvalidArgumentError, lambda: dmamap.mmio_map(small, bar, 0))
    w.refuses(InvalidArgumentError, lambda: dmamap.mmio_map(small, bar, 2 * PAGE_SIZE))      # VMA too small
    w.refuses(InvalidArgumentError, lambda: dmamap.mmio_map(small, w.m.ram_base, PAGE_SIZE))  # RAM is not MMIO
    w.refuses(InvalidArgumentError, lambda: dmamap.mmio_map(small, bar, PAGE_SIZE, cache="wb"))
    w.refuses(VmaNotMappedError, lambda: dmamap.mmio_map(w.gone, bar, PAGE_SIZE))
    w.refuses(dmamap.PteBusyError, lambda: dmamap.mmio_map(w.mapped, bar, PAGE_SIZE))
    w.refuses(InvalidArgumentError, lambda: dmamap.pio_map(small, 0xFFFF, 2))
    w.refuses(InvalidArgumentError, lambda: dmamap.pio_map(small, 0x300, 0))
    w.refuses(InvalidArgumentError, lambda: dmamap.pio_map(small, 0x300, PAGE_SIZE + 1))
    w.refuses(VmaNotMappedError, lambda: dmamap.pio_map(w.gone, 0x300, 4))
    if w.m.has_io_window:
        w.refuses(dmamap.PteBusyError, lambda: dmamap.pio_map(w.mapped, 0x300, 4))
    w.mm.munmap(small)


def test_removed_device_refuses(w: World) -> None:
    dev = w.m.add_device("gone")
    dev.remove()
    for fn in (lambda: dmamap.dma_alloc_coherent(dev, PAGE_SIZE), lambda: dev.dma_read(w.buf.dma_handle, 4),
               lambda: dev.dma_write(w.buf.dma_handle, b"x")):
        w.refuses(InvalidArgumentError, fn)


# ---- closed machines and address spaces ----

@pytest.mark.parametrize("platform", PLATFORMS)
def test_closed_machine_refuses_everything(platform: str) -> None:
    m = dmamap.Machine(platform, ram=RAM)
    mm = m.new_address_space()
    dev = m.add_device("d", bars=[PAGE_SIZE])
    buf = dmamap.dma_alloc_coherent(dev, PAGE_SIZE)
    vma = mm.mmap(PAGE_SIZE)
    page = m.alloc_pages(1)
    prot = vma.page_prot
    m.close()
    assert m.closed and mm.closed
    m.close()   # idempotent
    calls: list[Callable[[], object]] = [
        lambda: m.phys_read(m.ram_base, 4), lambda: m.phys_write(m.ram_base, b"x"), lambda: m.stats,
        lambda: m.alloc_pages(1), lambda: m.free_pages(page), lambda: m.pfn_valid(1), lambda: m.memory_map,
        lambda: m.new_address_space(), lambda: m.add_device("e"), lambda: m.port_read(0x300),
        lambda: m.flush_dcache_range(m.ram_base, 64), lambda: m.memtype_lookup(0), lambda: m.attribute_reports,
        lambda: page.refcount, lambda: mm.mmap(PAGE_SIZE), lambda: mm.munmap(vma), lambda: mm.read(vma.start, 1),
        lambda: mm.write(vma.start, b"x"), lambda: mm.translate(vma.start), lambda: mm.touch(vma.start),
        lambda: mm.stats, lambda: mm.root, lambda: mm.find_vma(vma.start), lambda: mm.count_present(0, 1),
        lambda: mm.flush_tlb(), lambda: vma.vm_flags, lambda: vma.vm_flags_set(1),
        lambda: setattr(vma, "page_prot", prot),
        lambda: dmamap.remap_pfn_range(vma, vma.start, 1, PAGE_SIZE, prot),
        lambda: dmamap.vmf_insert_pfn(vma, vma.start, 1), lambda: dmamap.vm_insert_page(vma, vma.start, page),
        lambda: dmamap.zap_vma_ptes(vma, vma.start, PAGE_SIZE),
        lambda: dmamap.change_protection(vma, vma.start, PAGE_SIZE, prot),
        lambda: dmamap.dma_alloc_coherent(dev, PAGE_SIZE), lambda: dev.dma_read(buf.dma_handle, 4),
        lambda: dev.dma_write(buf.dma_handle, b"x"), lambda: dmamap.dma_mmap_coherent(dev, vma, *buf),
        lambda: dmamap.dma_free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle),
        lambda: dmamap.mmio_map(vma, dev.bar(0)[0], PAGE_SIZE), lambda: dmamap.pio_map(vma, 0x300, 4),
    ]
    for fn in calls:
        with pytest.raises(MachineClosedError):
            fn()
    assert not vma.live and "closed" in repr(m)


def test_closed_address_space_refuses(w: World) -> None:
    mm = w.m.new_address_space()
    vma = mm.mmap(PAGE_SIZE)
    mm.close()
    mm.close()
    for fn in (lambda: mm.mmap(PAGE_SIZE), lambda: mm.read(vma.start, 1), lambda: mm.translate(vma.start),
               lambda: mm.munmap(vma), lambda: vma.vm_flags, lambda: mm.root,
               lambda: dmamap.remap_pfn_range(vma, vma.start, 1, PAGE_SIZE, w.prot),
               lambda: dmamap.dma_mmap_coherent(w.dev, vma, *w.buf)):
        w.refuses((MachineClosedError, VmaNotMappedError), fn)


# ---- the C boundary ----

@pytest.fixture
def raw() -> Iterator[dmamap.Machine]:
    m = dmamap.Machine("x86_64", ram=RAM)
    try:
        yield m
    finally:
        m.close()


def _err() -> Any:
    return ffi.new("struct dmamap_err *")


def test_c_entry_points_accept_null_handles() -> None:
    """Every entry point taking a machine or address space survives NULL, with or without an err struct."""
    N = ffi.NULL
    for err in (N, _err()):
        closed = lib.DMAMAP_ECLOSED
        assert lib.dmamap_phys_read(N, 0, N, 0, err) == closed
        assert lib.dmamap_phys_write(N, 0, N, 0, err) == closed
        assert lib.dmamap_page_info(N, 0, ffi.new("struct dmamap_page_info *"), err) == closed
        assert lib.dmamap_alloc_pages(N, 1, 1, 1, ffi.new("uint64_t *"), err) == closed
        assert lib.dmamap_free_pages(N, 0, 1, err) == closed
        assert lib.dmamap_get_page(N, 0, err) == closed
        assert lib.dmamap_put_page(N, 0, err) == closed
        assert lib.dmamap_machine_set_cache(N, 4096, 4, err) == closed
        assert lib.dmamap_add_region(N, ffi.new("struct dmamap_region *"), err) == closed
        assert lib.dmamap_remove_region(N, 0, err) == closed
        assert lib.dmamap_iowin_map(N, 0, 4096, 0, err) == closed
        assert lib.dmamap_iowin_unmap(N, 0, err) == closed
        assert lib.dmamap_port_access(N, 0, 1, 0, ffi.new("uint64_t *"), err) == closed
        assert lib.dmamap_flush_dcache_range(N, 0, 1, err) == closed
        assert lib.dmamap_invalidate_dcache_range(N, 0, 1, err) == closed
        assert lib.dmamap_clean_dcache_range(N, 0, 1, err) == closed
        assert lib.dmamap_dma_rw(N, 0, N, 1, 0, err) == closed
        assert lib.dmamap_memtype_reserve(N, 0, 4096, 0, err) == closed
        assert lib.dmamap_memtype_free(N, 0, 4096, 0, err) == closed
        assert lib.dmamap_as_new(N, 0, err) == N
        assert lib.dmamap_mmap(N, 0, 4096, 0, 0x27, 0, ffi.new("int64_t *"), err) == closed
        assert lib.dmamap_munmap(N, 0, err) == closed
        assert lib.dmamap_vma_info(N, 0, ffi.new("struct dmamap_vma_info *"), err) == closed
        assert lib.dmamap_vma_set_flags(N, 0, 0, 0, err) == closed
        assert lib.dmamap_vma_set_prot(N, 0, 0x27, err) == closed
        assert lib.dmamap_vma_set_fault(N, 0, 0, N, 0, 0, 0, 0, err) == closed
        assert lib.dmamap_remap_pfn_range(N, 0, 0, 0, 4096, 0x27, 0, err) == closed
        assert lib.dmamap_vmf_insert_pfn_prot(N, 0, 0, 0, 0x27, err) == closed
        assert lib.dmamap_vmf_insert_mixed(N, 0, 0, 0, err) == closed
        assert lib.dmamap_vm_insert_page(N, 0, 0, 0, err) == closed
        assert lib.dmamap_zap_vma_ptes(N, 0, 0, 4096, err) == closed
        assert lib.dmamap_mprotect(N, 0, 0, 4096, 0x27, err) == closed
        assert lib.dmamap_translate(N, 0, ffi.new("struct dmamap_xlate *"), err) == closed
        assert lib.dmamap_access(N, 0, N, 0, 0, err) == closed
        assert lib.dmamap_read_n(N, 0, 1, ffi.new("uint64_t *"), err) == closed
        assert lib.dmamap_write_n(N, 0, 1, 0, err) == closed
        assert lib.dmamap_touch(N, 0, 1, 1, 0, err) == closed
        assert lib.dmamap_touch_list(N, N, 0, 0, err) == closed
        assert lib.dmamap_count_present(N, 0, 1, ffi.new("uint64_t *"), err) == closed
        if err != N:
            assert err.code == closed and ffi.string(err.msg)
    # no error channel: must simply not crash
    lib.dmamap_machine_free(N)
    lib.dmamap_as_free(N)
    lib.dmamap_machine_set_io(N, N, N)
    lib.dmamap_machine_set_memtype_policy(N, 1)
    lib.dmamap_as_set_fault_cb(N, N, N)
    lib.dmamap_tlb_flush_all(N)
    lib.dmamap_machine_stats(N, N)
    lib.dmamap_as_stats(N, N)
    ms = ffi.new("struct dmamap_machine_stats *")
    ms.ram_pages = 7
    lib.dmamap_machine_stats(N, ms)
    assert ms.ram_pages == 0
    assert lib.dmamap_region_count(N) == 0
    assert lib.dmamap_region_get(N, 0, ffi.new("struct dmamap_region *")) < 0
    assert lib.dmamap_region_of(N, 0) == 0
    assert lib.dmamap_pfn_valid(N, 0) == 0
    assert lib.dmamap_memtype_lookup(N, 0) == -1
    assert lib.dmamap_memtype_reports(N, N, 5) == 0
    assert lib.dmamap_as_root(N) == 0
    assert lib.dmamap_as_va_range(N, N, N) < 0
    assert lib.dmamap_vma_find(N, 0) == -1
    assert lib.dmamap_bench_store_loop(N, 100, 0) >= 0
    assert lib.dmamap_bench_host_map(1 << 62, 1, 0) < 0
    assert lib.dmamap_bench_host_map(0, 0, 0) < 0
    assert lib.dmamap_machine_new(0, N, 0, 0, N) == N
    assert lib.dmamap_machine_new(1, N, 4096, 0, N) == N
    assert lib.dmamap_machine_new(1, N, 4095, 0, _err()) == N


def test_c_entry_points_refuse_null_out_params(raw: dmamap.Machine) -> None:
    m = raw._ptr()
    space = raw.new_address_space()
    as_ = space._ptr()
    vma = space.mmap(PAGE_SIZE)
    N = ffi.NULL
    before = (snapshot(raw, space.root), raw.stats, space.stats)
    for err in (N, _err()):
        inval = lib.DMAMAP_EINVAL
        assert lib.dmamap_page_info(m, raw.ram_base >> 12, N, err) == inval
        assert lib.dmamap_alloc_pages(m, 1, 1, 1, N, err) == inval
        assert lib.dmamap_port_access(m, 0x300, 1, 0, N, err) == inval
        assert lib.dmamap_add_region(m, N, err) == inval
        assert lib.dmamap_region_get(m, 0, N) == inval
        assert lib.dmamap_memtype_reports(m, N, 64) == 0
        assert lib.dmamap_phys_read(m, raw.ram_base, N, 8, err) == inval
        assert lib.dmamap_phys_write(m, raw.ram_base, N, 8, err) == inval
        assert lib.dmamap_dma_rw(m, raw.ram_base, N, 8, 1, err) == inval
        assert lib.dmamap_mmap(as_, 0, PAGE_SIZE, 0, int(vma.page_prot), 0, N, err) == inval
        assert lib.dmamap_vma_info(as_, vma.id, N, err) == inval
        assert lib.dmamap_vma_set_fault(as_, vma.id, 1, N, 1, 0, 0, 0, err) == inval
        assert lib.dmamap_vma_set_fault(as_, vma.id, 99, N, 0, 0, 0, 0, err) == inval
        assert lib.dmamap_vma_set_fault(as_, vma.id, -1, N, 0, 0, 0, 0, err) == inval
        assert lib.dmamap_vma_set_fault(as_, vma.id, 2, ffi.new("struct dmamap_chunk[1]", [(1, 1)]), -5, 0, 0, 0,
                                        err) == inval
        assert lib.dmamap_translate(as_, vma.start, N, err) == inval
        assert lib.dmamap_access(as_, vma.start, N, 8, 0, err) == inval
        assert lib.dmamap_read_n(as_, vma.start, 4, N, err) == inval
        assert lib.dmamap_read_n(as_, vma.start, 3, ffi.new("uint64_t *"), err) == inval
        assert lib.dmamap_write_n(as_, vma.start, -8, 0, err) == inval
        assert lib.dmamap_touch_list(as_, N, 4, 0, err) == inval
        assert lib.dmamap_count_present(as_, vma.start, PAGE_SIZE, N, err) == inval
        assert lib.dmamap_remap_pfn_range(as_, vma.id, vma.start, 1, PAGE_SIZE, int(vma.page_prot), 0x40,
                                          err) == inval   # unknown flags
        assert lib.dmamap_vma_set_flags(as_, vma.id, 1 << 40, 0, err) == inval
        assert lib.dmamap_vma_set_flags(as_, vma.id, 0, 1 << 63, err) == inval
        assert lib.dmamap_mmap(as_, 0, PAGE_SIZE, 1 << 50, int(vma.page_prot), 0, ffi.new("int64_t *"), err) == inval
        assert lib.dmamap_as_va_range(as_, N, N) == 0
        for bad_id in (-1, 1 << 30, vma.id + 1, -(1 << 31)):
            assert lib.dmamap_munmap(as_, bad_id, err) == lib.DMAMAP_ENOVMA
            assert lib.dmamap_vma_info(as_, bad_id, ffi.new("struct dmamap_vma_info *"), err) == lib.DMAMAP_ENOVMA
        lib.dmamap_machine_stats(m, N)
        lib.dmamap_as_stats(as_, N)
        lib.dmamap_machine_set_memtype_policy(m, 12345)   # unknown: ignored
    assert raw.attribute_reports == [] and (snapshot(raw, space.root), raw.stats, space.stats) == before
    # the unknown policy was ignored: x86 is still strict
    page = raw.alloc_pages(1)
    raw.memtype_reserve(page.phys_addr, PAGE_SIZE, "WB")
    with pytest.raises(dmamap.MemtypeConflictError):
        raw.memtype_reserve(page.phys_addr, PAGE_SIZE, "UC")


def test_c_arch_queries_refuse_unknown_enums() -> None:
    for isa in (0, 63, -1, 1 << 30):
        assert lib.dmamap_isa_levels(isa) == lib.DMAMAP_EINVAL
        assert lib.dmamap_isa_va_bits(isa) == lib.DMAMAP_EINVAL
        assert lib.dmamap_cache_name(isa, 0) == ffi.NULL
        assert lib.dmamap_cache_count(isa) == lib.DMAMAP_EINVAL
        assert lib.dmamap_cache_is_cacheable(isa, 0) == lib.DMAMAP_EINVAL
        assert lib.dmamap_cache_is_device(isa, 0) == lib.DMAMAP_EINVAL
        assert lib.dmamap_prot_make(isa, 0xF, 0) == 0
        assert lib.dmamap_prot_cache(isa, 0) == lib.DMAMAP_EINVAL
        assert lib.dmamap_prot_set_cache(isa, 0x1234, 1) == 0x1234
        assert lib.dmamap_prot_flags(isa, ~0 & (U64 - 1)) == 0
        assert lib.dmamap_cache_by_pat_index(isa, 0) == lib.DMAMAP_EINVAL
    for isa in (1, 2):
        for cache in (-1, 8, 1 << 30, -(1 << 31)):
            assert lib.dmamap_cache_name(isa, cache) == ffi.NULL
            assert lib.dmamap_cache_is_cacheable(isa, cache) == lib.DMAMAP_EINVAL
            assert lib.dmamap_cache_is_device(isa, cache) == lib.DMAMAP_EINVAL
            assert lib.dmamap_prot_make(isa, 0xF, cache) == 0
            assert lib.dmamap_prot_set_cache(isa, 0x1234, cache) == 0x1234
            assert lib.dmamap_cache_by_pat_index(isa, cache) == lib.DMAMAP_EINVAL
        assert 0 <= lib.dmamap_prot_cache(isa, U64 - 1) < 8


def test_c_machine_new_refuses_bad_backing() -> None:
    err = _err()
    buf = ffi.new("uint8_t[]", 2 * PAGE_SIZE)
    for isa, size, backing in ((1, PAGE_SIZE + 1, buf), (1, PAGE_SIZE, ffi.NULL), (7, PAGE_SIZE, buf)):
        assert lib.dmamap_machine_new(isa, backing, size, 1, err) == ffi.NULL
        assert err.code == lib.DMAMAP_EINVAL
    m = lib.dmamap_machine_new(2, buf, 2 * PAGE_SIZE, 0, err)
    try:
        r = ffi.new("struct dmamap_region *")
        for typ, base, size, off in ((0, 0, PAGE_SIZE, 0), (9, 0, PAGE_SIZE, 0), (1, 1, PAGE_SIZE, 0),
                                     (1, 0, 0, 0), (1, U64 - PAGE_SIZE, 2 * PAGE_SIZE, 0), (1, 1 << 48, PAGE_SIZE, 0),
                                     (1, 0, 4 * PAGE_SIZE, 0), (2, 0, PAGE_SIZE, 2 * PAGE_SIZE),
                                     (2, 0, PAGE_SIZE, U64 - PAGE_SIZE)):
            r.type, r.base, r.size, r.backing_offset = typ, base, size, off
            assert lib.dmamap_add_region(m, r, err) == lib.DMAMAP_EINVAL, (typ, base, size, off)
        assert lib.dmamap_region_count(m) == 0
        for ways, size in ((0, 4096), (-1, 4096), (65, 65 * 64), (4, 0), (4, 100), (3, 3 * 64 * 3), (1, 1 << 40)):
            assert lib.dmamap_machine_set_cache(m, size, ways, err) == lib.DMAMAP_EINVAL
        # a machine without RAM: nothing to allocate, no address space
        assert lib.dmamap_alloc_pages(m, 1, 1, 1, ffi.new("uint64_t *"), err) == lib.DMAMAP_ENOMEM
        assert lib.dmamap_as_new(m, 0, err) == ffi.NULL and err.code == lib.DMAMAP_ENOMEM
        assert lib.dmamap_free_pages(m, 0, 1, err) == lib.DMAMAP_EINVAL
        assert lib.dmamap_page_info(m, 0, ffi.new("struct dmamap_page_info *"), err) == lib.DMAMAP_EBADPAGE
    finally:
        lib.dmamap_machine_free(m)
