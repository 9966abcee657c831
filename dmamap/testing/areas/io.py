"""Area: I/O.  An MMIO mapping is uncached and each access makes exactly one
device callback at its width; after pio_map, user address start+i reaches I/O
port port+i the same way."""

from __future__ import annotations

from typing import Any

import dmamap
from dmamap import PAGE_SHIFT, PAGE_SIZE
from dmamap.device import Bar, PortRange
from dmamap.testing.checks import make_device, raw_entry
from dmamap.testing.pagetable import DEVICE
from dmamap.testing.rule import Check, rule
from dmamap.testing.target import Target

_WIDTHS = {1: ("read8", "write8"), 2: ("read16", "write16"), 4: ("read32", "write32"), 8: ("read64", "write64")}


def _reg_value(offset: int, width: int) -> int:
    return (0x0123456789ABCDEF ^ (offset * 0x9E3779B97F4A7C15)) & ((1 << (8 * width)) - 1)


@rule("mmio_width_exact", "I/O",
      "an MMIO mapping is uncached and each access makes exactly one device callback at its width",
      ("uc", "wc"))
def mmio_width_exact(t: Target, variant: str) -> None:
    chk = Check("mmio_width_exact", variant)
    log: list[tuple[Any, ...]] = []

    def rd(off: int, size: int) -> int:
        log.append(("read", off, size))
        return _reg_value(off, size)

    def wr(off: int, size: int, value: int) -> None:
        log.append(("write", off, size, value))

    with t.machine() as m:
        dev = make_device(m, bars=[Bar(0x2000, read=rd, write=wr)])
        base, size = dev.bar(0)
        mm = m.new_address_space()
        vma = mm.mmap(size)
        dmamap.mmio_map(vma, base, size, cache=variant)
        for width, (rname, wname) in _WIDTHS.items():
            for off in (0, 3 * width, 0x1000 + 2 * width, size - width):
                va = vma.start + off
                value = _reg_value(off + 1, width)
                log.clear()
                getattr(mm, wname)(va, value)
                if log != [("write", off, width, value)]:
                    chk.fail(va, f"a {8 * width}-bit MMIO write made device callbacks {log}; expected exactly "
                                 f"[('write', {off:#x}, {width}, {value:#x})]")
                log.clear()
                got = getattr(mm, rname)(va)
                if log != [("read", off, width)]:
                    chk.fail(va, f"a {8 * width}-bit MMIO read made device callbacks {log}; expected exactly "
                                 f"[('read', {off:#x}, {width})]")
                if got != _reg_value(off, width):
                    chk.fail(va, f"a {8 * width}-bit MMIO read returned {got:#x}, the register holds "
                                 f"{_reg_value(off, width):#x}")
        for i in range(size >> PAGE_SHIFT):
            va = vma.start + (i << PAGE_SHIFT)
            e = raw_entry(m, mm, va)
            if e is None or e.pa != base + (i << PAGE_SHIFT):
                chk.fail(va, f"MMIO page {i} maps {'nothing' if e is None else hex(e.pa)}, not "
                             f"{base + (i << PAGE_SHIFT):#x}")
                return
            if e.cacheable or (variant == "uc" and e.cache not in DEVICE):
                chk.fail(va, f"MMIO mapped {e.cache} (PTE {e.entry:#x}); '{variant}' needs "
                             f"{'a Device / uncached type' if variant == 'uc' else 'an uncached type'}")
            if not e.special:
                chk.fail(va, f"MMIO mapped by a normal PTE {e.entry:#x}: registers have no page descriptor")


@rule("pio_reachable", "I/O",
      "after pio_map, user address start+i reaches I/O port port+i with one callback at the access width",
      needs="port_io")
def pio_reachable(t: Target, variant: str) -> None:
    chk = Check("pio_reachable")
    log: list[tuple[Any, ...]] = []

    def rd(off: int, size: int) -> int:
        log.append(("read", off, size))
        return _reg_value(off, size)

    def wr(off: int, size: int, value: int) -> None:
        log.append(("write", off, size, value))

    port, count = 0x300, 16
    with t.machine() as m:
        make_device(m, ports=[PortRange(port, count, read=rd, write=wr)])
        mm = m.new_address_space()
        vma = mm.mmap(PAGE_SIZE)
        dmamap.pio_map(vma, port, count)
        for width in (1, 2, 4):
            for off in range(0, count, width):
                va = vma.start + off
                value = _reg_value(off + 7, width)
                log.clear()
                getattr(mm, _WIDTHS[width][1])(va, value)
                if log != [("write", off, width, value)]:
                    chk.fail(va, f"a {8 * width}-bit write to {va:#x} should reach port {port + off:#x} once; "
                                 f"device saw {log}")
                log.clear()
                got = getattr(mm, _WIDTHS[width][0])(va)
                if log != [("read", off, width)] or got != _reg_value(off, width):
                    chk.fail(va, f"a {8 * width}-bit read of {va:#x} should read port {port + off:#x} once "
                                 f"({_reg_value(off, width):#x}); device saw {log}, read returned {got:#x}")
        e = raw_entry(m, mm, vma.start)
        if e is not None and (e.cacheable or not e.special):
            chk.fail(vma.start, f"the port window is mapped {e.cache}, {'special' if e.special else 'normal'} "
                                f"PTE {e.entry:#x}: it must be an uncached PFN mapping")
