"""ioremap / ioremap_wc / iounmap and the readl/writel family (include/asm-generic/io.h)."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SIZE
from dmamap.iomem import ioremap_cache_type

EXPECTED = {"x86": ("UC-", "WC"), "arm": ("DEVICE_nGnRE", "NORMAL_NC"), "sram": ("DEVICE_nGnRE", "NORMAL_NC"),
            "riscv": ("IO", "NC")}


def _dev(m: dmamap.Machine, log: list[tuple[object, ...]]) -> dmamap.Device:
    def read(off: int, size: int) -> int:
        log.append(("r", off, size))
        return 0x0807060504030201 & ((1 << (8 * size)) - 1)

    def write(off: int, size: int, value: int) -> None:
        log.append(("w", off, size, value))

    return m.add_device("regs", bars=[dmamap.Bar(2 * PAGE_SIZE, read=read, write=write)])


def test_accesses_reach_the_device_once_at_their_width(m: dmamap.Machine, plat: str) -> None:
    log: list[tuple[object, ...]] = []
    base = _dev(m, log).bar(0)[0]
    io = dmamap.ioremap(m, base + 0x100, 0x100)
    assert isinstance(io, dmamap.IoMem) and io.machine is m
    assert int(io) % PAGE_SIZE == 0x100   # the offset inside the page is kept
    assert isinstance(io + 4, dmamap.IoMem) and isinstance(4 + io, dmamap.IoMem) and (io + 4).machine is m
    assert isinstance((io + 8) - 4, dmamap.IoMem) and (io + 8) - io == 8 and type((io + 8) - io) is int
    with pytest.raises(TypeError):
        io + "x"   # type: ignore[operator]
    with pytest.raises(TypeError):
        dmamap.IoMem(int(io), object())  # type: ignore[arg-type]
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.IoMem(-1, m)
    for fn, size in ((dmamap.readb, 1), (dmamap.readw, 2), (dmamap.readl, 4), (dmamap.readq, 8),
                     (dmamap.readl_relaxed, 4), (dmamap.ioread8, 1), (dmamap.ioread16, 2), (dmamap.ioread32, 4)):
        log.clear()
        assert fn(io + 8) == 0x0807060504030201 & ((1 << (8 * size)) - 1)
        assert log == [("r", 0x108, size)]
    for wfn, size in ((dmamap.writeb, 1), (dmamap.writew, 2), (dmamap.writel, 4), (dmamap.writeq, 8),
                      (dmamap.writel_relaxed, 4), (dmamap.iowrite8, 1), (dmamap.iowrite16, 2),
                      (dmamap.iowrite32, 4)):
        log.clear()
        wfn(0x1122334455667788 & ((1 << (8 * size)) - 1), io + 0x10)   # value first, as the kernel
        assert log == [("w", 0x110, size, 0x1122334455667788 & ((1 << (8 * size)) - 1))]
    uc, wc = EXPECTED[plat]
    assert m.kernel.translate(int(io)).cache == uc
    assert ioremap_cache_type(m.isa) == uc and ioremap_cache_type(m.isa, wc=True) == wc
    iow = dmamap.ioremap_wc(m, base + PAGE_SIZE, PAGE_SIZE)
    assert m.kernel.translate(int(iow)).cache == wc
    dmamap.iounmap(io)
    dmamap.iounmap(iow)
    assert m.kernel.translate(int(io)) is None


def test_plain_register_file_round_trips_little_endian(m: dmamap.Machine) -> None:
    base = m.add_device("ram-regs", bars=[PAGE_SIZE]).bar(0)[0]
    io = dmamap.ioremap(m, base, PAGE_SIZE)
    dmamap.writel(0xA1B2C3D4, io + 4)
    assert dmamap.readb(io + 4) == 0xD4 and dmamap.readw(io + 6) == 0xA1B2
    dmamap.writeq(0x0102030405060708, io + 8)
    assert dmamap.readl(io + 8) == 0x05060708 and dmamap.readl(io + 12) == 0x01020304
    dmamap.iounmap(io)


def test_ioremap_refuses_what_is_not_mmio_and_changes_nothing(m: dmamap.Machine) -> None:
    base = m.add_device("d", bars=[PAGE_SIZE]).bar(0)[0]
    before = len(m.kernel.vmas)
    with pytest.raises(dmamap.IoremapError):
        dmamap.ioremap(m, m.ram_base, PAGE_SIZE)        # RAM
    with pytest.raises(dmamap.IoremapError):
        dmamap.ioremap(m, base + PAGE_SIZE - 4, 8)      # runs off the BAR
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.ioremap(m, base, 0)
    with pytest.raises(TypeError):
        dmamap.ioremap(object(), base, 4)  # type: ignore[arg-type]
    assert len(m.kernel.vmas) == before


def test_accessors_and_iounmap_take_iomem_only(m: dmamap.Machine) -> None:
    base = m.add_device("d", bars=[PAGE_SIZE]).bar(0)[0]
    io = dmamap.ioremap(m, base, PAGE_SIZE)
    with pytest.raises(dmamap.IoremapError):
        dmamap.readl(int(io))   # type: ignore[arg-type]
    with pytest.raises(TypeError):
        dmamap.readl("io")   # type: ignore[arg-type]
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.writeb(0x100, io)     # does not fit a byte
    with pytest.raises(dmamap.IoremapError):
        dmamap.iounmap(int(io))   # type: ignore[arg-type]
    dmamap.iounmap(io)
    with pytest.raises(dmamap.IoremapError):
        dmamap.iounmap(io)           # twice
    with pytest.raises(dmamap.SegmentationFault):
        dmamap.readl(io)             # unmapped: the kernel would oops


def test_kernel_and_user_wc_mappings_of_one_aperture_agree(m: dmamap.Machine) -> None:
    """ioremap_wc on the kernel side, vm_iomap_memory with pgprot_writecombine on
    the user side: one memory type, no report, no conflict (x86 PAT included)."""
    base = m.add_device("fb", bars=[4 * PAGE_SIZE]).bar(0)[0]
    io = dmamap.ioremap_wc(m, base, 4 * PAGE_SIZE)
    mm = m.new_address_space()
    vma = mm.mmap(4 * PAGE_SIZE)
    vma.vm_page_prot = dmamap.pgprot_writecombine(vma.vm_page_prot)
    dmamap.vm_iomap_memory(vma, base, 4 * PAGE_SIZE)
    dmamap.writel(0xCAFEF00D, io + 0x2000)
    assert mm.read32(vma.start + 0x2000) == 0xCAFEF00D
    assert mm.translate(vma.start).cache == m.kernel.translate(int(io)).cache
    assert m.attribute_reports == []


def test_a_closed_machine_refuses_ioremap_and_accesses() -> None:
    m = dmamap.Machine("arm", ram=16 << 20)
    base = m.add_device("d", bars=[PAGE_SIZE]).bar(0)[0]
    io = dmamap.ioremap(m, base, PAGE_SIZE)
    m.close()
    with pytest.raises(dmamap.MachineClosedError):
        dmamap.readl(io)
    with pytest.raises(dmamap.MachineClosedError):
        dmamap.ioremap(m, base, PAGE_SIZE)
    dmamap.iounmap(io)   # nothing left to tear down: forgotten quietly, as a closed machine's mappings are


def test_ioread_iowrite_reach_ports_through_ioport_map(m: dmamap.Machine) -> None:
    """lib/iomap.c: the same ioread*/iowrite* on an ioport_map cookie make port accesses."""
    log: list[tuple[object, ...]] = []

    def read(off: int, size: int) -> int:
        log.append(("in", off, size))
        return 0xA5A5A5A5 & ((1 << (8 * size)) - 1)

    def write(off: int, size: int, value: int) -> None:
        log.append(("out", off, size, value))

    m.add_device("ports", ports=[dmamap.PortRange(0x300, 8, read=read, write=write)])
    p = dmamap.ioport_map(m, 0x300, 8)
    assert isinstance(p + 2, dmamap.IoPort) and int(p + 2) == 0x302
    assert dmamap.ioread8(p + 1) == 0xA5 and dmamap.ioread16(p + 2) == 0xA5A5 and dmamap.ioread32(p + 4) == 0xA5A5A5A5
    dmamap.iowrite8(0x12, p)
    dmamap.iowrite32(0x11223344, p + 4)
    assert log == [("in", 1, 1), ("in", 2, 2), ("in", 4, 4), ("out", 0, 1, 0x12), ("out", 4, 4, 0x11223344)]
    log.clear()
    with pytest.raises(dmamap.IoremapError):
        dmamap.ioread32(p + 6)          # runs past the 8 mapped ports
    with pytest.raises(dmamap.IoremapError):
        dmamap.readl(p)                 # readl is MMIO only, as the kernel's
    with pytest.raises(dmamap.InvalidArgumentError):
        dmamap.iowrite8(0x100, p)
    with pytest.raises(dmamap.IoremapError):
        dmamap.ioport_map(m, 0xFFFC, 8)
    with pytest.raises(dmamap.IoremapError):
        dmamap.ioport_unmap(0x300)   # type: ignore[arg-type]
    assert log == []
    dmamap.ioport_unmap(p)
