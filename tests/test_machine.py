"""The emulated machine: memory map, pfn_valid, physical access, page allocator and page descriptors."""

from __future__ import annotations

import itertools

import pytest

import dmamap
from dmamap import PAGE_SIZE, InvalidArgumentError, Page, PteBusyError, remap_pfn_range, vm_insert_page
from dmamap.testing import pagetable

MiB = 1 << 20
#: Where RAM sits: x86 from 0, AArch64 (QEMU virt) at 1 GiB.
RAM_BASE = {"x86_64": 0, "aarch64": 0x4000_0000, "riscv64": 0x8000_0000}


def test_memory_map(machine: dmamap.Machine) -> None:
    """RAM at the ISA's base with the requested size, SRAM and the I/O window, sorted and non-overlapping;
    a device's BAR appears as MMIO owned by it."""
    dev = machine.add_device("nic", bars=[0x1000, 0x4000])
    regions = machine.memory_map
    kinds = {r.kind: r for r in regions}
    assert kinds["ram"].base == RAM_BASE[machine.isa] == machine.ram_base
    assert kinds["ram"].size == 16 * MiB
    assert kinds["sram"].size == MiB and kinds["sram"].base == machine.sram_base
    assert "io-window" in kinds
    mmio = [r for r in regions if r.kind == "mmio"]
    assert [(r.base, r.size, r.owner) for r in mmio] == [(dev.bar(0)[0], 0x1000, "nic BAR0"),
                                                         (dev.bar(1)[0], 0x4000, "nic BAR1")]
    assert regions == sorted(regions, key=lambda r: r.base)
    for a, b in itertools.pairwise(regions):
        assert a.end <= b.base
    for r in regions:
        assert machine.region_of(r.base) == r.kind and machine.region_of(r.end - 1) == r.kind
        assert machine.region_at(r.base) == r
    assert machine.region_of(0x7F_0000_0000) is None


def test_pfn_valid_only_for_ram(machine: dmamap.Machine) -> None:
    """pfn_valid is true for every RAM pfn and false just outside RAM, for SRAM, MMIO and the I/O window."""
    dev = machine.add_device("dev", bars=[PAGE_SIZE])
    first = machine.ram_base >> 12
    last = first + (machine.ram_size >> 12) - 1
    assert all(machine.pfn_valid(p) for p in range(first, last + 1))
    io = next(r for r in machine.memory_map if r.kind == "io-window")
    for pfn in (last + 1, machine.sram_base >> 12, (machine.sram_base + machine.sram_size) // PAGE_SIZE - 1,
                dev.bar(0)[0] >> 12, io.base >> 12, 1 << 35):
        assert not machine.pfn_valid(pfn), hex(pfn)
    if first:
        assert not machine.pfn_valid(first - 1)
    assert dmamap.pfn_to_page(first, machine=machine) == Page(machine, first)


def test_phys_read_write(machine: dmamap.Machine) -> None:
    """phys_write/phys_read round-trip in RAM and SRAM, across page boundaries; other bytes stay zero."""
    for base in (machine.ram_base + 5 * MiB, machine.sram_base + 3 * PAGE_SIZE):
        data = bytes(range(256)) * 40
        machine.phys_write(base + PAGE_SIZE - 100, data)
        assert machine.phys_read(base + PAGE_SIZE - 100, len(data)) == data
        assert machine.phys_read(base + PAGE_SIZE - 101, 1) == b"\0"
        assert machine.phys_read(base + PAGE_SIZE - 100 + len(data), 1) == b"\0"
    assert machine.phys_read(machine.ram_base, 0) == b""
    with pytest.raises(TypeError):
        machine.phys_write(machine.ram_base, "text")  # type: ignore[arg-type]
    last = machine.ram_base + machine.ram_size - 8
    machine.phys_write(last, b"lastbyte")
    assert machine.phys_read(last, 8) == b"lastbyte"


def test_cpu_and_phys_views_agree(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """What the CPU writes through a mapping is what phys_read sees at the translated address, and back."""
    page = machine.alloc_pages(2)
    vma = mm.mmap(2 * PAGE_SIZE)
    remap_pfn_range(vma, vma.start, page.pfn, len(vma), vma.vm_page_prot)
    mm.write(vma.start + PAGE_SIZE - 3, b"straddle")
    assert machine.phys_read(page.phys_addr + PAGE_SIZE - 3, 8) == b"straddle"
    machine.phys_write(page.phys_addr + 17, b"device")
    assert mm.read(vma.start + 17, 6) == b"device"
    kaddr = machine.page_address(page)
    assert machine.kernel.read(kaddr + 17, 6) == b"device"


def test_page_allocator_accounting(machine: dmamap.Machine) -> None:
    """alloc_pages/free_pages move ram_pages_used by exactly the page count, honour alignment, hand out
    disjoint zeroed runs, and refuse double frees."""
    st = machine.stats
    assert st.ram_pages == machine.ram_size // PAGE_SIZE
    assert st.ram_pages_used == st.table_pages          # only the kernel's page tables so far
    a = machine.alloc_pages(7)
    b = machine.alloc_pages(16, align=16)
    assert b.pfn % 16 == 0
    assert set(range(a.pfn, a.pfn + 7)).isdisjoint(range(b.pfn, b.pfn + 16))
    assert machine.stats.ram_pages_used == st.ram_pages_used + 23
    assert all(machine.pfn_valid(p) for p in (a.pfn, b.pfn + 15))
    assert machine.phys_read(a.phys_addr, 7 * PAGE_SIZE) == bytes(7 * PAGE_SIZE)
    machine.phys_write(a.phys_addr, b"dirty")
    assert (a.refcount, a.mapcount, a.flags["reserved"], a.flags["dma"]) == (1, 0, True, False)
    assert machine.alloc_pages(dma=True).flags["dma"]
    machine.free_pages(a, 7)
    assert machine.stats.ram_pages_used == st.ram_pages_used + 16 + 1
    assert machine.phys_read(a.phys_addr, 5) == bytes(5)            # scrubbed on free
    with pytest.raises(InvalidArgumentError):
        machine.free_pages(a, 7)
    with pytest.raises(InvalidArgumentError):
        machine.alloc_pages(1, align=3)
    with pytest.raises(InvalidArgumentError):
        machine.alloc_pages(0)


def test_table_pages_are_ram_pages(machine: dmamap.Machine) -> None:
    """Page tables live in RAM: a new address space takes one RAM page, flagged as a table page."""
    st = machine.stats
    mm = machine.new_address_space()
    assert (machine.stats.table_pages, machine.stats.ram_pages_used) == (st.table_pages + 1, st.ram_pages_used + 1)
    root_pa = pagetable.decoder_for(machine).root_table(mm.root)
    root = machine.pfn_to_page(root_pa >> 12)
    assert root.flags["table"]
    # empty, but for the kernel half every user root shares on ISAs with one root (x86 pgd_alloc)
    half = pagetable.decoder_for(machine).user_entries
    assert machine.phys_read(root_pa, 8 * half) == bytes(8 * half)
    kroot = pagetable.decoder_for(machine).root_table(machine.kernel.root)
    assert machine.phys_read(root_pa + 8 * half, 8 * (512 - half)) == machine.phys_read(kroot + 8 * half,
                                                                                          8 * (512 - half))


def test_page_refcount_and_mapcount(machine: dmamap.Machine) -> None:
    """vm_insert_page takes one reference and one map count per mapping (across address spaces); munmap drops
    them; a mapped page cannot be freed; get_page/put_page move only the refcount."""
    page = machine.alloc_pages()
    assert (page.refcount, page.mapcount) == (1, 0)
    mm1, mm2 = machine.new_address_space(), machine.new_address_space()
    v1, v2 = mm1.mmap(PAGE_SIZE), mm2.mmap(2 * PAGE_SIZE)
    vm_insert_page(v1, v1.start, page)
    assert (page.refcount, page.mapcount) == (2, 1)
    vm_insert_page(v2, v2.start, page)
    vm_insert_page(v2, v2.start + PAGE_SIZE, page)
    assert (page.refcount, page.mapcount) == (4, 3)
    assert v1.mixedmap and not v1.pfnmap
    with pytest.raises(PteBusyError):
        machine.free_pages(page)
    machine.get_page(page)
    assert (page.refcount, page.mapcount) == (5, 3)
    machine.put_page(page)
    mm2.munmap(v2)
    assert (page.refcount, page.mapcount) == (2, 1)
    mm1.close()
    assert (page.refcount, page.mapcount) == (1, 0)
    with pytest.raises(dmamap.BadPageError):
        machine.put_page(page)               # would drop the last reference
    machine.free_pages(page)
    with pytest.raises(dmamap.BadPageError):
        machine.get_page(page)               # free page


def test_remap_takes_no_page_references(machine: dmamap.Machine, mm: dmamap.AddressSpace) -> None:
    """remap_pfn_range writes special PTEs: RAM pages it maps keep refcount 1 and mapcount 0."""
    page = machine.alloc_pages()
    vma = mm.mmap(PAGE_SIZE)
    remap_pfn_range(vma, vma.start, page.pfn, PAGE_SIZE, vma.vm_page_prot)
    assert (page.refcount, page.mapcount) == (1, 0)
    assert vma.pfnmap and vma.io


def test_info(machine: dmamap.Machine) -> None:
    """info() reports the ISA's table depth, VA width and the memory map."""
    info = machine.info()
    assert info["isa"] == machine.isa == info["platform"]
    assert (info["page_table_levels"], info["va_bits"]) == ((4, 48) if machine.isa == "x86_64" else (3, 39))
    assert info["memory_map"] == machine.memory_map
    assert info["page_offset"] == machine.page_offset
    assert info["dma_coherent"] is True


@pytest.mark.parametrize("ram", [0, 4096, 16 * PAGE_SIZE - 1, (1 << 40) + PAGE_SIZE])
def test_bad_machine_sizes(ram: int) -> None:
    """RAM that is not a page multiple between 64 KiB and 1 TiB is refused."""
    with pytest.raises(InvalidArgumentError):
        dmamap.Machine("x86_64", ram=ram)


def test_unknown_platform() -> None:
    """An unknown platform name is BackendError (a LookupError)."""
    with pytest.raises(dmamap.BackendError) as ei:
        dmamap.Machine("pdp11")
    assert isinstance(ei.value, LookupError)


def test_context_manager_closes(isa: str) -> None:
    """``with Machine(...)`` closes it on exit, exceptions included."""
    with pytest.raises(RuntimeError, match="inside"):
        with dmamap.Machine(isa, ram=MiB) as m:
            raise RuntimeError("inside")
    assert m.closed
    with pytest.raises(dmamap.MachineClosedError):
        m.phys_read(m.ram_base, 1)
