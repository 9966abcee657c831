"""MMIO and port I/O through the helpers: mmio_map and pio_map reach the device
callbacks exactly once per access, at the right width and offset, with the
platform's user attribute; memtype rules for BARs; machine.port_read/write."""

from __future__ import annotations

import pytest

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE, Bar, PortRange
from dmamap.errors import (
    AlignmentFault,
    InvalidArgumentError,
    MemtypeConflictError,
    SegmentationFault,
)

P = PAGE_SIZE
RAM = 16 << 20
PLATFORMS = ("x86", "arm", "sram")
MMIO_CACHE = {("x86", "uc"): "UC-", ("x86", "wc"): "WC",
              ("arm", "uc"): "DEVICE_nGnRnE", ("arm", "wc"): "NORMAL_NC",
              ("sram", "uc"): "DEVICE_nGnRnE", ("sram", "wc"): "NORMAL_NC",
              ("riscv", "uc"): "IO", ("riscv", "wc"): "NC"}


class Regs:
    """Callbacks that log every access and answer reads with a value derived from
    the offset, so a wrong offset or width shows up in the data."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    @staticmethod
    def value(offset: int, size: int) -> int:
        v = int.from_bytes(bytes((offset + i) * 3 + 1 & 0xFF for i in range(size)), "little")
        return v

    def read(self, offset: int, size: int) -> int:
        self.log.append(("r", offset, size))
        return self.value(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.log.append(("w", offset, size, value))

    def take(self) -> list[tuple]:
        out, self.log = self.log, []
        return out


def expected_split(offset: int, n: int, max_width: int = 8, page: int = P) -> list[tuple[int, int]]:
    """(offset, width) of the naturally aligned accesses a bulk copy makes: the widest
    aligned access that fits, never crossing a page."""
    out = []
    end = offset + n
    while offset < end:
        limit = min(end, (offset // page + 1) * page) - offset
        w = max_width
        while w > 1 and (offset % w or w > limit):
            w //= 2
        out.append((offset, w))
        offset += w
    return out


# ---- MMIO ----

@pytest.mark.parametrize("cache", ["uc", "wc"])
def test_mmio_width_accesses(m: dmamap.Machine, plat: str, cache: str) -> None:
    """Each readN/writeN through an mmio_map mapping calls the BAR's callback exactly
    once with the access's offset, width and value, and the user PTE has the
    platform's uncached / write-combining attribute."""
    regs = Regs()
    dev = m.add_device("nic", bars=[Bar(2 * P, read=regs.read, write=regs.write)])
    base, size = dev.bar(0)
    assert size == 2 * P and base % P == 0
    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    dmamap.mmio_map(vma, base, 2 * P, cache=cache)
    t = mm.translate(vma.start + P)
    assert t is not None
    assert t.cache == MMIO_CACHE[(plat, cache)]
    assert t.region == "mmio" and t.pa == base + P and t.special and not t.cacheable
    assert t.device == (cache == "uc")
    assert vma.io and vma.pfnmap

    accesses0 = m.stats.mmio_accesses
    cases = [(1, 0x3), (2, 0x12), (4, 0x40), (8, 0x88), (4, P + 0x10), (8, 2 * P - 8)]
    for width, off in cases:
        reader = getattr(mm, f"read{8 * width}")
        assert reader(vma.start + off) == Regs.value(off, width)
        assert regs.take() == [("r", off, width)]
        value = int.from_bytes(bytes(range(0xA0, 0xA0 + width)), "little")
        getattr(mm, f"write{8 * width}")(vma.start + off, value)
        assert regs.take() == [("w", off, width, value)]
    assert m.stats.mmio_accesses - accesses0 == 2 * len(cases)
    # nothing is cached: a second read calls the device again
    mm.read32(vma.start + 0x40)
    mm.read32(vma.start + 0x40)
    assert regs.take() == [("r", 0x40, 4)] * 2


@pytest.mark.parametrize("cache", ["uc", "wc"])
@pytest.mark.parametrize(("offset", "n"), [(0, 16), (1, 15), (3, 6), (P - 5, 13), (0x7, 1), (0x100, 64)])
def test_mmio_bulk_splits_into_aligned_accesses(m: dmamap.Machine, cache: str, offset: int, n: int) -> None:
    """Bulk mm.write/mm.read over MMIO become naturally aligned 1/2/4/8-byte device
    accesses covering the range once, in order, never crossing a page."""
    regs = Regs()
    dev = m.add_device("nic", bars=[Bar(2 * P, read=regs.read, write=regs.write)])
    mm = m.new_address_space()
    vma = mm.mmap(2 * P)
    dmamap.mmio_map(vma, dev.bar(0)[0], 2 * P, cache=cache)
    data = bytes((0x30 + i) & 0xFF for i in range(n))
    mm.write(vma.start + offset, data)
    log = regs.take()
    assert [(o, w) for _, o, w, _ in log] == expected_split(offset, n)
    assert all(o % w == 0 and w in (1, 2, 4, 8) for _, o, w, _ in log)
    assert b"".join(v.to_bytes(w, "little") for _, _, w, v in log) == data
    got = mm.read(vma.start + offset, n)
    log = regs.take()
    assert [(o, w) for _, o, w in log] == expected_split(offset, n)
    assert got == b"".join(Regs.value(o, w).to_bytes(w, "little") for _, o, w in log)


def test_mmio_bulk_split_example() -> None:
    """The split of 15 bytes at offset 1 is 1@1, 2@2, 4@4, 8@8 (a worked example)."""
    assert expected_split(1, 15) == [(1, 1), (2, 2), (4, 4), (8, 8)]
    with dmamap.Machine("x86", ram=RAM) as m:
        regs = Regs()
        dev = m.add_device("nic", bars=[Bar(P, read=regs.read, write=regs.write)])
        mm = m.new_address_space()
        vma = mm.mmap(P)
        dmamap.mmio_map(vma, dev.bar(0)[0], P)
        mm.write(vma.start + 1, bytes(range(1, 16)))
        assert regs.take() == [("w", 1, 1, 0x01), ("w", 2, 2, 0x0302), ("w", 4, 4, 0x07060504),
                               ("w", 8, 8, 0x0F0E0D0C0B0A0908)]


def test_mmio_device_level_callbacks_and_plain_registers(m: dmamap.Machine) -> None:
    """add_device's read/write are the default for BARs given as sizes; a Bar with
    its own callbacks keeps them; each access goes to the BAR it hits; a device with
    no callbacks is a plain register file."""
    dflt, own = Regs(), Regs()
    dev = m.add_device("nic", bars=[P, Bar(P, read=own.read, write=own.write)], read=dflt.read, write=dflt.write)
    plain = m.add_device("plain", bars=[P])
    mm = m.new_address_space()
    v0, v1, v2 = mm.mmap(P), mm.mmap(P), mm.mmap(P)
    dmamap.mmio_map(v0, dev.bar(0)[0], P)
    dmamap.mmio_map(v1, dev.bar(1)[0], P)
    dmamap.mmio_map(v2, plain.bar(0)[0], P)
    mm.write32(v0.start + 0x20, 0x11111111)
    mm.write32(v1.start + 0x20, 0x22222222)
    assert dflt.take() == [("w", 0x20, 4, 0x11111111)]
    assert own.take() == [("w", 0x20, 4, 0x22222222)]
    assert mm.read16(v1.start + 6) == Regs.value(6, 2)
    assert own.take() == [("r", 6, 2)] and dflt.take() == []
    mm.write64(v2.start + 0x18, 0x0102030405060708)
    mm.write8(v2.start + 0x18, 0xFF)
    assert mm.read64(v2.start + 0x18) == 0x01020304050607FF
    assert mm.read(v2.start + 0x18, 3) == b"\xff\x07\x06"
    assert mm.read32(v2.start + 0x100) == 0


def test_mmio_unaligned_device_access_on_aarch64() -> None:
    """On AArch64 an unaligned access to Device memory is an alignment fault and
    never reaches the device; Normal-NC (wc) allows it."""
    with dmamap.Machine("arm", ram=RAM) as m:
        regs = Regs()
        dev = m.add_device("nic", bars=[Bar(P, read=regs.read, write=regs.write)])
        mm = m.new_address_space()
        uc, wc = mm.mmap(P), mm.mmap(P)
        dmamap.mmio_map(uc, dev.bar(0)[0], P, cache="uc")
        with pytest.raises(AlignmentFault):
            mm.read32(uc.start + 2)
        with pytest.raises(AlignmentFault):
            mm.write16(uc.start + 1, 1)
        assert regs.take() == []
        mm.munmap(uc)
        dmamap.mmio_map(wc, dev.bar(0)[0], P, cache="wc")
        mm.read32(wc.start + 2)
        assert regs.take() == [("r", 2, 4)]


def test_x86_mmio_second_type_adopts_reserved_type() -> None:
    """x86 reserve_pfn_range / is_new_memtype_allowed: a PFN map of a BAR asking
    "wc" over a UC- reservation adopts UC- (the PTE is UC-, nothing refused);
    once the UC- mappings go, "wc" gets WC."""
    with dmamap.Machine("x86", ram=RAM) as m:
        regs = Regs()
        dev = m.add_device("gpu", bars=[Bar(P, read=regs.read, write=regs.write)])
        bar = dev.bar(0)[0]
        mm = m.new_address_space()
        v_uc, v_wc = mm.mmap(P), mm.mmap(P)
        dmamap.mmio_map(v_uc, bar, P, cache="uc")
        dmamap.mmio_map(v_wc, bar, P, cache="wc")
        assert mm.translate(v_wc.start).cache == "UC-" and m.memtype_lookup(bar) == "UC-"
        assert m.attribute_reports == []
        mm.write32(v_wc.start, 7)
        assert regs.take() == [("w", 0, 4, 7)]
        mm.munmap(v_uc)
        mm.munmap(v_wc)
        assert m.memtype_lookup(bar) is None
        v = mm.mmap(P)
        dmamap.mmio_map(v, bar, P, cache="wc")
        assert mm.translate(v.start).cache == "WC"
        mm.write8(v.start + 3, 9)
        assert regs.take() == [("w", 3, 1, 9)]


def test_x86_mmio_memtype_conflict() -> None:
    """is_new_memtype_allowed refuses an uncached PFN map over a WB reservation:
    mapping a BAR WB and then "uc" raises MemtypeConflictError and leaves state
    unchanged (second VMA empty with its original prot and flags, the first
    mapping working, memtype WB); after the first is unmapped "uc" works."""
    with dmamap.Machine("x86", ram=RAM) as m:
        regs = Regs()
        dev = m.add_device("gpu", bars=[Bar(P, read=regs.read, write=regs.write)])
        bar = dev.bar(0)[0]
        mm = m.new_address_space()
        v_wb, v_uc = mm.mmap(P), mm.mmap(P)
        dmamap.remap_pfn_range(v_wb, v_wb.start, bar >> PAGE_SHIFT, P, dmamap.pgprot_cached(v_wb.page_prot))
        prot, flags, before = v_uc.vm_page_prot, v_uc.vm_flags, m.stats
        with pytest.raises(MemtypeConflictError):
            dmamap.mmio_map(v_uc, bar, P, cache="uc")
        assert v_uc.vm_page_prot == prot and v_uc.vm_flags == flags
        assert mm.count_present(v_uc.start, P) == 0
        assert m.stats == before and m.memtype_lookup(bar) == "WB"
        mm.munmap(v_wb)
        dmamap.mmio_map(v_uc, bar, P, cache="uc")
        assert mm.translate(v_uc.start).cache == "UC-"
        mm.write8(v_uc.start + 3, 9)
        assert regs.take() == [("w", 3, 1, 9)]


@pytest.mark.parametrize("plat", ["arm", "sram"])
def test_arm_mmio_mismatch_is_reported_not_refused(m: dmamap.Machine, plat: str) -> None:
    """On AArch64 a Device and a Normal-NC mapping of one BAR is reported in
    attribute_reports (the architecture does not trap it), and both work."""
    regs = Regs()
    dev = m.add_device("gpu", bars=[Bar(P, read=regs.read, write=regs.write)])
    mm = m.new_address_space()
    v_uc, v_wc = mm.mmap(P), mm.mmap(P)
    dmamap.mmio_map(v_uc, dev.bar(0)[0], P, cache="uc")
    assert m.attribute_reports == []
    dmamap.mmio_map(v_wc, dev.bar(0)[0], P, cache="wc")
    reports = m.attribute_reports
    assert len(reports) == 1
    assert (reports[0]["existing"], reports[0]["requested"]) == ("DEVICE_nGnRnE", "NORMAL_NC")
    assert reports[0]["start"] == dev.bar(0)[0]
    mm.write32(v_wc.start, 1)
    mm.write32(v_uc.start, 2)
    assert regs.take() == [("w", 0, 4, 1), ("w", 0, 4, 2)]


def test_mmio_map_argument_errors(m: dmamap.Machine) -> None:
    """mmio_map refuses RAM, unaligned or out-of-BAR ranges, a too-small VMA and an
    unknown cache mode, mapping nothing."""
    dev = m.add_device("nic", bars=[P, 2 * P])
    base0, base1 = dev.bar(0)[0], dev.bar(1)[0]
    mm = m.new_address_space()
    vma = mm.mmap(P)
    prot = vma.vm_page_prot
    bad = [((m.ram_base, P), {}), ((base0 + 8, P), {}), ((base1, 4 * P), {}), ((base1, 2 * P), {}),
           ((base0, P), {"cache": "wb"}), ((base0, 0), {})]
    for args, kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            dmamap.mmio_map(vma, *args, **kwargs)
    assert mm.count_present(vma.start, P) == 0 and vma.vm_page_prot == prot


# ---- port I/O ----

@pytest.mark.parametrize("port", [0x3F8, 0x60, 0xFFF0])
def test_pio_map_widths(m: dmamap.Machine, plat: str, port: int) -> None:
    """After pio_map(vma, port, count), readN/writeN at vma.start + i reach port + i
    exactly once with the right width and value (ports need not be page-aligned);
    x86 traps (no PTE), arm/sram go through a Device-attribute I/O window."""
    regs = Regs()
    dev = m.add_device("uart", ports=[PortRange(port, 16, read=regs.read, write=regs.write)])
    assert dev.ports[0].base == port
    mm = m.new_address_space()
    vma = mm.mmap(P)
    dmamap.pio_map(vma, port, 16)
    t = mm.translate(vma.start)
    if plat == "x86":
        assert t is None
    else:
        uncached = {"aarch64": "DEVICE_nGnRnE", "riscv64": "IO"}[m.isa]
        assert t is not None and t.region == "io-window" and t.cache == uncached and t.device
    ports0 = m.stats.port_accesses
    for width, i in [(1, 0), (1, 5), (2, 6), (4, 8), (4, 12), (2, 14), (1, 15)]:
        reader = getattr(mm, f"read{8 * width}")
        assert reader(vma.start + i) == Regs.value(i, width)
        assert regs.take() == [("r", i, width)]
        value = int.from_bytes(bytes(range(0x50, 0x50 + width)), "little")
        getattr(mm, f"write{8 * width}")(vma.start + i, value)
        assert regs.take() == [("w", i, width, value)]
    assert m.stats.port_accesses - ports0 == 14
    # bulk copies split into aligned accesses of at most 4 bytes (no 8-byte port I/O)
    mm.write(vma.start + 1, bytes(range(1, 16)))
    log = regs.take()
    assert [(o, w) for _, o, w, _ in log] == expected_split(1, 15, max_width=4)
    assert b"".join(v.to_bytes(w, "little") for _, _, w, v in log) == bytes(range(1, 16))
    assert mm.read(vma.start, 8) == b"".join(Regs.value(o, 4).to_bytes(4, "little") for o in (0, 4))
    assert regs.take() == [("r", 0, 4), ("r", 4, 4)]


def test_pio_register_file_and_kernel_port_access(m: dmamap.Machine) -> None:
    """A callback-less port range (given as a (base, count) tuple) is a register
    file: user writes through pio_map are seen by machine.port_read and kernel
    port_write by user reads."""
    m.add_device("kbd", ports=[(0x60, 8)])
    regs = Regs()
    m.add_device("uart", ports=[PortRange(0x3F8, 8)], read=regs.read, write=regs.write)
    mm = m.new_address_space()
    vma = mm.mmap(P)
    dmamap.pio_map(vma, 0x60, 8)
    mm.write32(vma.start + 4, 0x12345678)
    assert m.port_read(0x64, 4) == 0x12345678
    assert m.port_read(0x66, 2) == 0x1234
    m.port_write(0x61, 0xAB)
    m.port_write(0x62, 0xCDEF, 2)
    assert mm.read8(vma.start + 1) == 0xAB
    assert mm.read16(vma.start + 2) == 0xCDEF
    m.port_write(0x3F9, 0x55)
    assert m.port_read(0x3FA, 2) == Regs.value(2, 2)
    assert regs.take() == [("w", 1, 1, 0x55), ("r", 2, 2)]
    aborts = m.stats.port_master_aborts
    assert m.port_read(0x1000) == 0xFF   # unclaimed: PCI master abort reads all-ones
    assert m.stats.port_master_aborts == aborts + 1


def test_pio_unmap_and_many_mappings(m: dmamap.Machine) -> None:
    """Several port mappings coexist in one process; munmap makes the range a
    SegmentationFault and gives back its I/O-window space, so map/unmap can repeat
    far more often than the window has room for at once."""
    regs = Regs()
    m.add_device("a", ports=[PortRange(0x3F8, 8, read=regs.read, write=regs.write)])
    m.add_device("b", ports=[(0x2F8, 8)])
    mm = m.new_address_space()
    va, vb = mm.mmap(P), mm.mmap(P)
    dmamap.pio_map(va, 0x3F8, 8)
    dmamap.pio_map(vb, 0x2F8, 8)
    mm.write8(vb.start + 2, 0x42)
    mm.write8(va.start + 2, 0x24)
    assert m.port_read(0x2FA) == 0x42
    assert regs.take() == [("w", 2, 1, 0x24)]
    for _ in range(40):
        v = mm.mmap(P)
        dmamap.pio_map(v, 0x2F8, 8)
        assert mm.read8(v.start + 2) == 0x42
        mm.munmap(v)
        with pytest.raises(SegmentationFault):
            mm.read8(v.start + 2)
    mm.munmap(va)
    with pytest.raises(SegmentationFault):
        mm.write8(va.start, 1)
    assert regs.take() == []


def test_pio_map_argument_errors(m: dmamap.Machine) -> None:
    """pio_map refuses ranges outside the 64 KiB port space, zero counts and counts
    larger than the VMA."""
    m.add_device("uart", ports=[(0x3F8, 8)])
    mm = m.new_address_space()
    vma = mm.mmap(P)
    for port, count in [(0xFFF8, 16), (0x3F8, 0), (0, P + 1), (0x10000, 1)]:
        with pytest.raises(InvalidArgumentError):
            dmamap.pio_map(vma, port, count)
    assert mm.count_present(vma.start, P) == 0
